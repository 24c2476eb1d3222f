from tsrmon.rawlog.files import *  # noqa: F401,F403 moved; lead removes after updating callers
