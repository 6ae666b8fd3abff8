# Overlay port that builds from the checkout it lives in:
#   vcpkg install tollgate --overlay-ports=<checkout>/ports
# For a tagged release, replace SOURCE_PATH with vcpkg_from_github (see README).
set(VCPKG_BUILD_TYPE release) # header-only port

get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DTOLLGATE_BUILD_TESTS=OFF
        -DTOLLGATE_BUILD_EXAMPLES=OFF
        -DTOLLGATE_BUILD_BENCHMARKS=OFF
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/tollgate)
vcpkg_fixup_pkgconfig()
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/share/doc")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
