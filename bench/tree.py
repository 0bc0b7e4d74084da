"""Removing a benchmark's temporary tree without ever entering a mount: the
rule and the code of the Ansible collection (a subhost's `live` or a staged
copy of `/` left mounted below a scratch directory must not be walked
into). Its module_utils file imports nothing of Ansible, so it is loaded
here by path."""

import importlib.util
import os
import sys

_here = os.path.dirname(os.path.realpath(__file__))
_spec = importlib.util.spec_from_file_location(
    "subhost_module_utils",
    os.path.join(_here, "..", "contrib", "ansible", "plugins", "module_utils", "subhost.py"),
)
_utils = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_utils)
remove_tree_mount_free = _utils.remove_tree_mount_free


def remove_or_keep(path, who):
    """remove_tree_mount_free, saying on stderr what was kept and why."""
    try:
        remove_tree_mount_free(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        print(f"{who}: {path} kept: {e}", file=sys.stderr)
