# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0
"""The config the subhost module writes means, to bash, exactly the values
given: every value is sourced back by bash and compared. Run with the
collection's parent directory on PYTHONPATH:
  python3 -m unittest discover -s tests/unit -t .
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess
import tempfile
import unittest

from ansible_collections.subhost.fleet.plugins.modules import subhost

TRICKY = [
    "plain",
    "it's",
    "''",
    'say "hi"',
    "$SUB ${SUBHOST} $(id) `id`",
    "back\\slash\\",
    "tab\there",
    "new\nline",
    "",
    " leading and trailing ",
    "*.glob ?",
    "; rm -rf / & | > <",
    "!history #comment",
    "ünïcode",
]


class Failed(Exception):
    pass


class FakeModule(object):
    def fail_json(self, **kwargs):
        raise Failed(kwargs["msg"])


def bash_values(text, script):
    with tempfile.NamedTemporaryFile("w", suffix=".config", delete=False) as f:
        f.write(text)
    try:
        out = subprocess.run(
            ["bash", "--norc", "-c", 'source "$1" && ' + script, "_", f.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=True,
        )
        return out.stdout.decode("utf-8").split("\0")[:-1]
    finally:
        os.unlink(f.name)


class RenderTest(unittest.TestCase):
    def test_a_scalar_means_itself_to_bash(self):
        for value in TRICKY:
            text = subhost.render(FakeModule(), {"HOSTNAME": value})
            self.assertEqual(bash_values(text, 'printf "%s\\0" "$HOSTNAME"'), [value], text)

    def test_a_list_keeps_every_element_whole(self):
        text = subhost.render(FakeModule(), {"BOOT": TRICKY})
        self.assertEqual(bash_values(text, 'printf "%s\\0" "${BOOT[@]}"'), TRICKY, text)

    def test_numbers_become_strings_and_null_leaves_the_key_out(self):
        text = subhost.render(FakeModule(), {"STOP_TIMEOUT": 10, "PIDS_MAX": None})
        self.assertIn("STOP_TIMEOUT='10'\n", text)
        self.assertNotIn("PIDS_MAX", text)

    def test_keys_keep_the_given_order(self):
        # Services start in the order declared: SERVICE_web before SERVICE_db.
        given = {"SERVICE_web": ["web"], "LOWER": "/", "SERVICE_db": ["db"], "RESTART_db": "always"}
        a = subhost.render(FakeModule(), given)
        keys = [line.split("=")[0] for line in a.splitlines()[1:]]
        self.assertEqual(keys, list(given))
        self.assertEqual(a, subhost.render(FakeModule(), dict(given)))
        other = subhost.render(FakeModule(), dict(reversed(list(given.items()))))
        self.assertNotEqual(a, other)

    def test_refused_shapes(self):
        for config in (
            {"X Y": "1"},
            {"A;B": "1"},
            {"1A": "1"},
            {"LOWER": True},
            {"LOWER": {"nested": "dict"}},
            {"BRIDGES": [["nested"]]},
        ):
            with self.assertRaises(Failed, msg=repr(config)):
                subhost.render(FakeModule(), config)

    def test_the_name_rule(self):
        from ansible_collections.subhost.fleet.plugins.module_utils.subhost import name_problem

        for good in ("web", "a", "db-1", "x_y", "123456789012"):
            self.assertIsNone(name_problem(good), good)
        for bad in ("", "-web", "Web", "a/b", "../x", "1234567890123", "we b", "wéb"):
            self.assertIsNotNone(name_problem(bad), bad)


class RemoveTree(unittest.TestCase):
    """What `state: absent` and the scratch check remove: never anything
    below a mount found in the tree."""

    def setUp(self):
        self.top = tempfile.mkdtemp(prefix="subhost-test-tree-")
        self.victim = tempfile.mkdtemp(prefix="subhost-test-victim-")
        os.makedirs(os.path.join(self.victim, "sub"))
        with open(os.path.join(self.victim, "a"), "w") as f:
            f.write("x")

    def tearDown(self):
        for d in (self.top, self.victim):
            if os.path.isdir(d):
                subhost.remove_tree_mount_free(d)

    def test_removes_a_plain_tree_without_following_links(self):
        os.makedirs(os.path.join(self.top, "d", "e"))
        with open(os.path.join(self.top, "d", "f"), "w") as f:
            f.write("x")
        os.symlink(self.victim, os.path.join(self.top, "d", "link"))
        subhost.remove_tree_mount_free(self.top)
        self.assertFalse(os.path.exists(self.top))
        self.assertTrue(os.path.exists(os.path.join(self.victim, "a")))

    @unittest.skipUnless(os.geteuid() == 0, "a bind mount needs root")
    def test_stops_at_a_mount_and_deletes_nothing_below_it(self):
        point = os.path.join(self.top, "stage", "0")
        os.makedirs(point)
        subprocess.run(["mount", "--bind", self.victim, point], check=True, timeout=30)
        try:
            with self.assertRaises(OSError) as e:
                subhost.remove_tree_mount_free(self.top)
        finally:
            subprocess.run(["umount", "-l", point], check=True, timeout=30)
        self.assertIn("mount point", str(e.exception))
        self.assertTrue(os.path.exists(os.path.join(self.victim, "a")))
        self.assertTrue(os.path.isdir(os.path.join(self.victim, "sub")))


if __name__ == "__main__":
    unittest.main()
