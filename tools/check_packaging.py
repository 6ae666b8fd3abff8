#!/usr/bin/env python3
"""Checks the packaging files against the tree: one version everywhere (read
from include/tollgate/config.hpp), the vcpkg port's fix-up path matching the
install layout, and the Conan recipe's file list and properties. vcpkg and
Conan cannot run here; this checks what they rely on."""
import glob
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
errors = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        errors.append(what)


config = (ROOT / "include/tollgate/config.hpp").read_text()
parts = [re.search(rf"#define TOLLGATE_VERSION_{p} (\d+)", config).group(1) for p in ("MAJOR", "MINOR", "PATCH")]
version = ".".join(parts)
print(f"version in config.hpp: {version}")

meson = (ROOT / "meson.build").read_text()
check(re.search(r"version:\s*'([^']+)'", meson).group(1) == version, "meson.build version")

vcpkg = json.loads((ROOT / "ports/tollgate/vcpkg.json").read_text())
check(vcpkg.get("version") == version, "vcpkg.json version")
check(vcpkg.get("license") == "MIT", "vcpkg.json license is MIT")
deps = {d["name"] for d in vcpkg.get("dependencies", []) if d.get("host")}
check({"vcpkg-cmake", "vcpkg-cmake-config"} <= deps, "vcpkg.json host dependencies")
portfile = (ROOT / "ports/tollgate/portfile.cmake").read_text()
for needle in ("set(VCPKG_BUILD_TYPE release)", "vcpkg_cmake_configure(", "vcpkg_cmake_install()",
               "vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/tollgate)", "vcpkg_install_copyright("):
    check(needle in portfile, f"portfile has {needle}")
cmakelists = (ROOT / "CMakeLists.txt").read_text()
check('"${CMAKE_INSTALL_DATADIR}/cmake/tollgate"' in cmakelists,
      "CMake installs its config where the port's fix-up looks (share/cmake/tollgate)")
check((ROOT / "LICENSE").is_file() and "the tollgate authors" in (ROOT / "LICENSE").read_text(), "LICENSE")

conan = (ROOT / "conanfile.py").read_text()
check(re.search(r'version = "([^"]+)"', conan).group(1) == version, "conanfile.py version")
check('package_type = "header-library"' in conan, "conan package_type header-library")
check("check_min_cppstd(self, 17)" in conan, "conan checks C++17")
for prop, value in (("cmake_file_name", "tollgate"), ("cmake_target_name", "tollgate::tollgate"),
                    ("pkg_config_name", "tollgate")):
    check(f'set_property("{prop}", "{value}")' in conan, f"conan {prop} = {value}")
sources = re.search(r"exports_sources = (.+)", conan).group(1)
for pattern in re.findall(r'"([^"]+)"', sources):
    check(bool(glob.glob(str(ROOT / pattern), recursive=True)), f"conan exports_sources '{pattern}' matches files")
for f in ("test_package/conanfile.py", "test_package/CMakeLists.txt", "test_package/test_package.cpp"):
    check((ROOT / f).is_file(), f"{f} exists")

changelog = (ROOT / "CHANGELOG.md").read_text()
check(f"## {version}" in changelog, "CHANGELOG has an entry for this version")

if errors:
    print(f"{len(errors)} packaging check(s) failed")
    sys.exit(1)
print("packaging files agree with the tree")
