"""`attune-sensor new`: a pack whose own tests pass as generated, on plain CPython."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import support
from test_cli import run_cli


def run_pack_tests(pack: Path) -> subprocess.CompletedProcess:
    """The generated pack's tests, as its README says to run them, in a separate interpreter that
    has this source tree's SDK and its dependencies and nothing of this test process."""
    environment = {**os.environ, "PYTHONPATH": str(support.SDK)}
    return subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "tests"], cwd=pack, env=environment, capture_output=True, text=True, timeout=120
    )


class NewPackTest(unittest.TestCase):
    def setUp(self):
        self.parent = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.parent)

    def test_the_generated_pack_passes_its_own_tests(self):
        code, out, err = run_cli("new", "shop_feed", "--dir", str(self.parent))
        self.assertEqual(code, 0, err)
        pack = self.parent / "shop_feed"
        self.assertIn(f"created {pack}: pack shop_feed", out)
        files = sorted(str(p.relative_to(pack)) for p in pack.rglob("*") if p.is_file())
        self.assertEqual(files, [
            "README.md", "pack.yaml", "rules/on_new_item.yaml", "sensors/items.py", "sensors/items.yaml",
            "tests/fixtures/items.json", "tests/test_items.py", "triggers/new_item.yaml",
        ])
        manifest = (pack / "sensors/items.yaml").read_text()
        self.assertIn("ref: shop_feed.items\n", manifest)
        self.assertIn("triggers: [shop_feed.new_item]\n", manifest)
        self.assertIn("trigger: shop_feed.new_item\n", (pack / "rules/on_new_item.yaml").read_text())

        result = run_pack_tests(pack)
        self.assertEqual(result.returncode, 0, result.stderr)
        # Three offline tests, and the replay of tests/recording, skipped until one is made.
        self.assertIn("Ran 4 tests", result.stderr)
        self.assertIn("OK (skipped=1)", result.stderr)

        # The tests are real: a sensor that forgets its cursor fails them.
        sensor = pack / "sensors/items.py"
        sensor.write_text(sensor.read_text().replace('state.set_json("cursor", new[-1]["id"])', "pass"))
        broken = run_pack_tests(pack)
        self.assertNotEqual(broken.returncode, 0)
        self.assertIn("FAIL: test_cursor_emits_each_item_once", broken.stderr)

    def test_names_the_host_would_refuse_are_refused(self):
        for name, message in [
            ("my-feed", "`my-feed` is not a pack ref: use letters, digits and `_` only (e.g. `my_feed`)"),
            ("café", "`café` is not a pack ref: use letters, digits and `_` only (e.g. `caf`)"),
            ("x" * 117, f"`{'x' * 117}` is 117 characters; at most 116, so that `<pack>.on_new_item` fits the host's 128-byte refs"),
            ("core", "`core` is the host's built-in pack; pick another name"),
        ]:
            with self.subTest(name=name):
                code, _, err = run_cli("new", name, "--dir", str(self.parent))
                self.assertEqual((code, err), (1, f"attune-sensor: error: {message}\n"))
        self.assertEqual(list(self.parent.iterdir()), [])
        self.assertEqual(run_cli("new", "x" * 116, "--dir", str(self.parent))[0], 0)

    def test_an_existing_directory_is_left_alone(self):
        existing = self.parent / "feed"
        existing.mkdir()
        (existing / "keep.txt").write_text("mine")
        code, _, err = run_cli("new", "feed", "--dir", str(self.parent))
        self.assertEqual((code, err), (1, f"attune-sensor: error: {existing} already exists; pick another name or --dir\n"))
        self.assertEqual([p.name for p in existing.iterdir()], ["keep.txt"])


if __name__ == "__main__":
    unittest.main()
