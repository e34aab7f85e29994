"""The attune-sensor command, with componentize-py replaced by a stand-in that runs the entry module."""

import contextlib
import importlib
import io
import shutil
import site
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import support
from attune_sensor import cli
from support import FIXTURES


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def option_values(command: list, option: str) -> list:
    return [command[i + 1] for i, arg in enumerate(command) if arg == option]


class FakeComponentize:
    """Records the componentize-py command and, like its build step, imports the entry module."""

    def __init__(self, returncode: int = 0):
        self.returncode = returncode
        self.command: list = []
        self.environment: dict = {}
        self.guest = None

    def __call__(self, command, **kwargs):
        self.command = command
        self.environment = kwargs["env"]
        if self.returncode == 0 and command[command.index("componentize") + 1] == cli.ENTRY_MODULE:
            self.guest = self.import_entry(option_values(command, "-p"))
        if self.returncode == 0:
            Path(option_values(command, "-o")[0]).write_bytes(b"\0asm")
        return subprocess.CompletedProcess(command, self.returncode)

    @staticmethod
    def import_entry(search: list):
        # The modules of the sensor's build are forgotten after it, as they live in its component.
        saved = dict(sys.modules)
        sys.path[:0] = search
        try:
            return importlib.import_module(cli.ENTRY_MODULE).Guest()
        finally:
            del sys.path[:len(search)]
            for name in set(sys.modules) - set(saved):
                if not name.startswith("attune_sensor."):
                    del sys.modules[name]
            sys.modules.update(saved)


class BuildTest(unittest.TestCase):
    def setUp(self):
        support.fresh_host(self)
        workdir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, workdir)
        self.out = Path(workdir) / "sub" / "out.wasm"

    def build(self, *args: str, returncode: int = 0):
        fake = FakeComponentize(returncode)
        with mock.patch.object(cli.subprocess, "run", fake):
            return (*run_cli(*args), fake)

    def test_builds_a_sensor_with_its_dependency(self):
        code, _, err, fake = self.build("build", str(FIXTURES / "compiled_dep" / "sensor.py"), "-o", str(self.out))
        self.assertEqual(code, 0, err)
        command = fake.command
        self.assertEqual(option_values(command, "-w"), ["sensor"])
        self.assertEqual(option_values(command, "-d"), [str(cli.WIT_DIR)])
        search = option_values(command, "-p")
        self.assertEqual(search[1], str(FIXTURES / "compiled_dep"))
        self.assertIn(str(cli.PACKAGE_DIR.parent), search)
        fake.guest.init('{"name": "Attune"}')
        self.assertEqual([p.json for p in fake.guest.poll()], ['{"greeting": "Hello, Attune!"}'])
        self.assertTrue(self.out.exists())
        self.assertRegex(err, r"built .*out\.wasm \(0\.0 MB\) in \d+\.\d s")

    def test_compiled_sensor_errors_name_the_file(self):
        code, _, err, fake = self.build("build", str(FIXTURES / "raises.py"), "-o", str(self.out))
        self.assertEqual(code, 0, err)
        fake.guest.init("{}")
        error = support.sensor_error(fake.guest.poll)
        self.assertEqual(error.message, "KeyError: 'items'")
        self.assertIn('File "raises.py", line 7, in poll', error.traceback)

    def test_refuses_bad_input_before_componentize(self):
        latin1 = self.out.parent.parent / "latin1.py"
        latin1.write_bytes("# café\n".encode("latin-1"))
        for args, message in [
            (["build", "missing.py", "-o", "x.wasm"], "cannot read missing.py: [Errno 2] No such file or directory"),
            (["build", str(latin1), "-o", "x.wasm"], "latin1.py: 'utf-8' codec can't decode"),
            (["build", str(FIXTURES / "counter.py"), "-o", "x.wasm", "-p", "/no/such/dir"], "/no/such/dir: no such directory"),
        ]:
            code, _, err, fake = self.build(*args)
            self.assertEqual(code, 1)
            self.assertIn(message, err)
            self.assertEqual(fake.command, [])

    def test_componentize_searches_this_environment_only(self):
        # Without VIRTUAL_ENV, componentize-py would add the site-packages of the first python3 on PATH.
        code, _, err, fake = self.build("build", str(FIXTURES / "counter.py"), "-o", str(self.out))
        self.assertEqual(code, 0, err)
        self.assertEqual(fake.environment["VIRTUAL_ENV"], sys.prefix)

    def test_a_dependency_found_only_outside_this_environment_is_refused(self):
        root = self.out.parent.parent
        sensor_dir, user_site, vendored = root / "sensor", root / "user-site", root / "vendored"
        for directory in (sensor_dir, user_site / "faraway", vendored):
            directory.mkdir(parents=True)
        (user_site / "faraway" / "__init__.py").write_text("thing = 1\n")
        (sensor_dir / "sensor.py").write_text(
            "import json\nimport helper\ntry:\n    import faraway_optional\nexcept ImportError:\n    pass\n"
            "def poll(config):\n    import faraway_lazy\n    return []\n"
        )
        (sensor_dir / "helper.py").write_text("from faraway import thing\n")
        (user_site / "faraway_optional.py").write_text("")
        (user_site / "faraway_lazy.py").write_text("")
        with mock.patch.object(site, "getusersitepackages", return_value=str(user_site)):
            code, _, err, fake = self.build("build", str(sensor_dir / "sensor.py"), "-o", str(self.out))
            self.assertEqual(code, 1)
            self.assertEqual(fake.command, [])
            self.assertEqual(
                err,
                f"attune-sensor: error: helper.py imports `faraway`, found only in {user_site.resolve() / 'faraway'}, outside this "
                f"environment ({sys.prefix}): install what provides it here (`{sys.executable} -m pip install ...`) or pass its "
                "directory with -p\n",
            )
            # Given with -p, it is bundled; imports that are optional or not run on load were never in question.
            shutil.copytree(user_site / "faraway", vendored / "faraway")
            code, _, err, fake = self.build("build", str(sensor_dir / "sensor.py"), "-o", str(self.out), "-p", str(vendored))
            self.assertEqual(code, 0, err)
            self.assertIn(str(vendored.resolve()), option_values(fake.command, "-p"))

    def test_componentize_failure(self):
        code, _, err, _ = self.build("build", str(FIXTURES / "counter.py"), "-o", str(self.out), returncode=1)
        self.assertEqual(code, 1)
        self.assertIn("attune-sensor: error: componentize-py could not build counter.py", err)

    def test_build_runtime(self):
        code, _, err, fake = self.build("build-runtime", "-o", str(self.out))
        self.assertEqual(code, 0, err)
        self.assertEqual(option_values(fake.command, "-w"), ["source-runtime"])
        self.assertEqual(fake.command[fake.command.index("componentize") + 1], "attune_sensor._runtime")


class WitDirTest(unittest.TestCase):
    def test_prints_the_bundled_wit(self):
        code, out, _ = run_cli("wit-dir")
        self.assertEqual(code, 0)
        self.assertTrue((Path(out.strip()) / "sensor.wit").is_file())


if __name__ == "__main__":
    unittest.main()
