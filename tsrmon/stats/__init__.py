"""Statistics: mergeable partial sums on the calendar of TIME.ZONE."""
