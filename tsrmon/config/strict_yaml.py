"""Reading the YAML file strictly: a key or section given twice is refused
(PyYAML keeps the last one silently), and parser errors become one line."""

import yaml

def yaml_where(e, text):
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return f" at line {mark.line + 1}"
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow
        return f" at line {text.count(chr(10), 0, e.position) + 1}"
    return ""


def yaml_problem(e):
    if isinstance(e, yaml.reader.ReaderError):
        code = e.character if isinstance(e.character, int) else ord(e.character)
        text = f"control character U+{code:04X} is not allowed in YAML"
    else:
        text = getattr(e, "problem", None) or str(e)
    return " ".join(str(text).split())  # one line, whatever the parser said


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key, problem):
        super().__init__(problem)
        self.key = key
        self.problem = problem


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    PyYAML keeps the last value silently: a second ``SERVER:`` section
    replaced the first whole (its HOST fell back to 0.0.0.0).  The refusal
    names the dotted key and both lines.  ``<<`` merge keys may still be
    overridden by the mapping's own keys, as YAML intends.
    """

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        self._refuse_duplicates(node, "", set())
        return self.construct_document(node)

    def _refuse_duplicates(self, node, path, seen_nodes):
        if id(node) in seen_nodes:  # an alias met again (or a recursive one)
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = None
                if isinstance(key_node, yaml.ScalarNode):
                    try:
                        key = self.construct_object(key_node)
                        hash(key)
                    except Exception:
                        key = None
                dotted = f"{path}.{key}" if path else str(key)
                if key is not None:
                    if key in first:
                        what = "section" if not path else "key"
                        raise DuplicateKeyError(dotted, (
                            f"duplicate {what} at line {key_node.start_mark.line + 1} (first at line "
                            f"{first[key] + 1}); YAML would silently keep only the last one"))
                    first[key] = key_node.start_mark.line
                self._refuse_duplicates(value_node, dotted, seen_nodes)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._refuse_duplicates(item, f"{path}[{i}]", seen_nodes)
