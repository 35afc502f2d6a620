"""Slicer extension layout: CMake metadata, every Lib .py packaged, icons present.

The CMake files are checked twice: statically (the metadata block and the calls
Slicer's extension template requires) and, where ``cmake`` is installed, by
configuring the real files against a stub ``SlicerConfig.cmake`` whose macros
record their arguments; the recorded script lists are compared with the .py
files on disk.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MODULES = ("NeonatalVessels", "NeonatalClassify")
METADATA = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
            "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")


def _strip_comment(line: str) -> str:
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def cmake_text(path: Path) -> str:
    """CMake source without line comments (a '#' inside a quoted string is kept)."""
    return "\n".join(_strip_comment(line) for line in path.read_text().splitlines())


def cmake_sets(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2).strip().strip('"')
            for m in re.finditer(r'set\(\s*(\w+)\s+("[^"]*"|[^\s)]+)\s*\)', text, flags=re.S)}


def python_files(folder: Path, relative_to: Path) -> set[str]:
    return {p.relative_to(relative_to).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}


# ----------------------------------------------------------------------------- static
def test_top_level_metadata_and_structure():
    text = cmake_text(REPO / "CMakeLists.txt")
    sets = cmake_sets(text)
    assert re.search(r"project\(\s*NeonatalBrain\s*\)", text)
    for key in METADATA:
        assert sets.get(key), f"{key} missing or empty in CMakeLists.txt"
    assert sets["EXTENSION_CATEGORY"] == "Quantification"
    assert sets["EXTENSION_DEPENDS"] == "NA"
    assert sets["EXTENSION_ICONURL"].endswith("NeonatalBrain.png")
    assert all(u.startswith("https://") for u in sets["EXTENSION_SCREENSHOTURLS"].split())
    order = [text.index(s) for s in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                                     "add_subdirectory(NeonatalBrainLib)", "add_subdirectory(NeonatalVessels)",
                                     "add_subdirectory(NeonatalClassify)",
                                     "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                                     "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order)


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_uses_scripted_module_macros(module):
    text = cmake_text(REPO / module / "CMakeLists.txt")
    assert cmake_sets(text)["MODULE_NAME"] == module
    assert "slicerMacroBuildScriptedModule(" in text
    assert re.search(r"\$\{MODULE_NAME\}Lib/\*\.py", text), "the Lib package is not globbed"
    assert "Resources/Icons/${MODULE_NAME}.png" in text and "Resources/UI/${MODULE_NAME}.ui" in text
    testing = text[text.index("if(BUILD_TESTING)"):]
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in testing
    assert (REPO / module / "Testing" / "CMakeLists.txt").is_file()
    assert (REPO / module / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_shared_package_is_installed_with_ctk_macro():
    text = cmake_text(REPO / "NeonatalBrainLib" / "CMakeLists.txt")
    assert "ctkMacroCompilePythonScript(" in text
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in text and "NO_INSTALL_SUBDIR" in text


@pytest.mark.parametrize("icon", ["NeonatalBrain.png", "NeonatalVessels/Resources/Icons/NeonatalVessels.png",
                                  "NeonatalClassify/Resources/Icons/NeonatalClassify.png"])
def test_icons_are_128_px_rgba_and_not_blank(icon):
    from matplotlib import image

    pixels = image.imread(REPO / icon)
    assert pixels.shape == (128, 128, 4)
    alpha = pixels[..., 3]
    assert 0.2 < (alpha > 0.5).mean() < 0.95  # a shape on a transparent background
    assert np.unique(np.round(pixels[alpha > 0.5, :3], 2), axis=0).shape[0] > 20  # shaded, not flat


# ----------------------------------------------------------------------------- configured
STUB_CONFIG = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
"""
STUB_USE = r"""
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(_log ${CMAKE_BINARY_DIR}/slicer_calls.txt)
file(WRITE ${_log} "")
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(A "NO_INSTALL_SUBDIR" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  file(APPEND ${_log} "ctk|${A_TARGET_NAME}|${A_SOURCE_DIR}|${A_SCRIPTS}|${A_RESOURCES}\n")
endmacro()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(A "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  file(APPEND ${_log} "module|${A_NAME}|${CMAKE_CURRENT_SOURCE_DIR}|${A_SCRIPTS}|${A_RESOURCES}\n")
endmacro()
macro(slicer_add_python_unittest)
  cmake_parse_arguments(A "" "SCRIPT" "" ${ARGN})
  file(APPEND ${_log} "unittest|${A_SCRIPT}|${CMAKE_CURRENT_SOURCE_DIR}\n")
endmacro()
"""


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    tmp = tmp_path_factory.mktemp("cmake")
    stub = tmp / "stub"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_CONFIG)
    (stub / "UseSlicer.cmake").write_text(STUB_USE)
    (stub / "Empty.cmake").write_text("")
    build = tmp / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    proc = subprocess.run([cmake, "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={stub}", "-DBUILD_TESTING=ON",
                           *generator], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "No CMAKE_C_COMPILER could be found" in proc.stderr + proc.stdout:
        pytest.skip("no C/C++ compiler for CMake's project() language check")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    calls = [line.split("|") for line in (build / "slicer_calls.txt").read_text().splitlines() if line]
    return calls


def test_configured_modules_package_every_lib_file(configured):
    modules = {c[1]: c for c in configured if c[0] == "module"}
    assert set(modules) == set(MODULES)
    for name, (_, _, source_dir, scripts, resources) in modules.items():
        source = Path(source_dir)
        listed = set(scripts.split(";"))
        expected = {f"{name}.py"} | python_files(source / f"{name}Lib", source)
        assert listed == expected, f"{name}: not packaged {sorted(expected - listed)}, extra {sorted(listed - expected)}"
        for resource in resources.split(";"):
            assert (source / resource).is_file(), f"{name}: resource {resource} does not exist"
        assert {f"Resources/Icons/{name}.png", f"Resources/UI/{name}.ui"} <= set(resources.split(";"))
        # data files of the Lib package (the vessel engine's DMV line scorer) travel with its scripts
        lib_data = {p.relative_to(source).as_posix() for p in (source / f"{name}Lib").glob("*.json")}
        assert lib_data <= set(resources.split(";")), f"{name}: not packaged {sorted(lib_data)}"
    unittests = {(Path(c[2]).name, c[1]) for c in configured if c[0] == "unittest"}
    assert {(m, f"{m}.py") for m in MODULES} <= unittests


def test_configured_shared_package_lists_every_file(configured):
    (call,) = [c for c in configured if c[0] == "ctk" and c[1] == "NeonatalBrainLib"]
    source = Path(call[2]).resolve()
    assert source == REPO
    listed = set(call[3].split(";"))
    assert listed == python_files(REPO / "NeonatalBrainLib", REPO)
    assert "NeonatalBrainLib/mrml.py" in listed and any(p.startswith("NeonatalBrainLib/phantom/") for p in listed)
