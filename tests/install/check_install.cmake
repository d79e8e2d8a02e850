# Installs a build into a fresh prefix and uses it the way another program
# would, with nothing from the source or build tree but the test's own files
# (example.c, this folder's CMakeLists.txt) and the model fixtures.
#
#   cmake -DMODE=pkgconfig|cmake|headers -DBUILD_DIR=... -DWORK_DIR=...
#         -DSOURCE_DIR=... -DLIBDIR=lib -DINCLUDEDIR=include -DVERSION=...
#         -DC_COMPILER=... -DCXX_COMPILER=... -DOPENMM_INCLUDE_DIR=...
#         -P check_install.cmake
#
#   pkgconfig: cc example.c $(pkg-config --cflags --libs smoothflow), run it
#   cmake:     configure tests/install (find_package(smoothflow)), build, run it
#   headers:   compile every installed header on its own (C++17; smoothflow.h
#              also as strict C11): none may need a header that is not installed
#
# The programs run with LD_LIBRARY_PATH unset and RPATH to the prefix only;
# ldd must resolve libsmoothflow inside the prefix.  Any failure is fatal.
cmake_minimum_required(VERSION 3.18)

foreach(var MODE BUILD_DIR WORK_DIR SOURCE_DIR LIBDIR INCLUDEDIR VERSION C_COMPILER)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "check_install.cmake: -D${var}=... is required")
    endif()
endforeach()

set(PREFIX "${WORK_DIR}/prefix")
set(MODEL "${SOURCE_DIR}/tests/data/tiny.safetensors")
set(REFERENCE "${SOURCE_DIR}/tests/data/tiny.reference.txt")

# Run a command; stop with its output when it fails.  Output in RUN_OUTPUT.
function(run what)
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE result
                    OUTPUT_VARIABLE out ERROR_VARIABLE err)
    if(NOT result EQUAL 0)
        string(REPLACE ";" " " command "${ARGN}")
        message(FATAL_ERROR "${what} failed (${result}):\n  ${command}\n${out}\n${err}")
    endif()
    set(RUN_OUTPUT "${out}" PARENT_SCOPE)
endfunction()

# Fail unless `path` (after resolving links and ..) lies inside the prefix.
function(require_in_prefix what path)
    get_filename_component(real "${path}" REALPATH)
    get_filename_component(prefix "${PREFIX}" REALPATH)
    string(FIND "${real}/" "${prefix}/" at)
    if(NOT at EQUAL 0)
        message(FATAL_ERROR "${what} is '${path}', outside the install prefix ${PREFIX}: "
                            "the test would not be using the installed tree")
    endif()
endfunction()

# The installed example must load libsmoothflow from the prefix.
function(run_example exe)
    find_program(LDD ldd)
    if(LDD)
        run("ldd ${exe}" ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH ${LDD} ${exe})
        if(NOT RUN_OUTPUT MATCHES "libsmoothflow[^ \t]* => ([^ \t\n]+)")
            message(FATAL_ERROR "ldd does not show libsmoothflow resolved for ${exe}:\n${RUN_OUTPUT}")
        endif()
        require_in_prefix("the libsmoothflow that ${exe} loads" "${CMAKE_MATCH_1}")
    endif()
    run("the example program" ${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH
        ${exe} ${MODEL} ${REFERENCE})
    message(STATUS "${RUN_OUTPUT}")
endfunction()

#------------------------------------------------------------ the install ----
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
run("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX})

string(REGEX MATCH "^[0-9]+\\.[0-9]+" soversion "${VERSION}")
string(REGEX MATCH "^[0-9]+" major "${VERSION}")
if(NOT major EQUAL 0)
    set(soversion "${major}")
endif()
foreach(file
        ${LIBDIR}/libsmoothflow.so
        ${LIBDIR}/libsmoothflow.so.${soversion}
        ${LIBDIR}/libsmoothflow.so.${VERSION}
        ${INCLUDEDIR}/smoothflow.h
        ${LIBDIR}/cmake/smoothflow/smoothflowConfig.cmake
        ${LIBDIR}/cmake/smoothflow/smoothflowConfigVersion.cmake
        ${LIBDIR}/cmake/smoothflow/smoothflowTargets.cmake
        ${LIBDIR}/pkgconfig/smoothflow.pc
        ${LIBDIR}/libSmoothFlowPlugin.so
        ${LIBDIR}/plugins/libSmoothFlowPluginReference.so
        ${INCLUDEDIR}/SmoothFlowForce.h)
    if(NOT EXISTS "${PREFIX}/${file}")
        message(FATAL_ERROR "cmake --install did not install ${file} into ${PREFIX}")
    endif()
endforeach()

#-------------------------------------------------------------- pkg-config ----
if(MODE STREQUAL "pkgconfig")
    find_program(PKG_CONFIG NAMES pkg-config pkgconf)
    if(NOT PKG_CONFIG)
        message(FATAL_ERROR "pkg-config not found (Debian: apt-get install pkgconf)")
    endif()
    set(pc ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${PREFIX}/${LIBDIR}/pkgconfig ${PKG_CONFIG})
    run("pkg-config --modversion smoothflow" ${pc} --modversion smoothflow)
    string(STRIP "${RUN_OUTPUT}" modversion)
    if(NOT modversion STREQUAL VERSION)
        message(FATAL_ERROR "pkg-config says smoothflow ${modversion}, the build is ${VERSION}")
    endif()
    run("pkg-config --variable=prefix smoothflow" ${pc} --variable=prefix smoothflow)
    string(STRIP "${RUN_OUTPUT}" pc_prefix)
    get_filename_component(pc_prefix_real "${pc_prefix}" REALPATH)
    get_filename_component(prefix_real "${PREFIX}" REALPATH)
    if(NOT pc_prefix_real STREQUAL prefix_real)
        message(FATAL_ERROR "smoothflow.pc's prefix is '${pc_prefix}', not the install prefix ${PREFIX}")
    endif()
    run("pkg-config --static --libs smoothflow" ${pc} --static --libs smoothflow)
    if(NOT RUN_OUTPUT MATCHES "-lcjson" OR NOT RUN_OUTPUT MATCHES "-lm( |$|\n)")
        message(FATAL_ERROR "pkg-config --static --libs smoothflow lacks cJSON or libm: ${RUN_OUTPUT}")
    endif()
    run("pkg-config --cflags --libs smoothflow" ${pc} --cflags --libs smoothflow)
    string(STRIP "${RUN_OUTPUT}" flags)
    separate_arguments(flags UNIX_COMMAND "${flags}")
    foreach(flag ${flags})
        if(flag MATCHES "^-[IL](.+)$")
            require_in_prefix("pkg-config's ${flag}" "${CMAKE_MATCH_1}")
        endif()
    endforeach()
    if(NOT "-lsmoothflow" IN_LIST flags)
        message(FATAL_ERROR "pkg-config --libs smoothflow lacks -lsmoothflow: ${flags}")
    endif()
    set(exe "${WORK_DIR}/example")
    run("compiling example.c with pkg-config's flags"
        ${C_COMPILER} -std=c11 -Wall -Wextra -Wpedantic -Werror
        ${SOURCE_DIR}/tests/install/example.c ${flags} -lm
        -Wl,-rpath,${PREFIX}/${LIBDIR} -o ${exe})
    run_example(${exe})

#------------------------------------------------------------ find_package ----
elseif(MODE STREQUAL "cmake")
    set(consumer "${WORK_DIR}/consumer")
    # No package registry: only CMAKE_PREFIX_PATH may point find_package at a tree.
    run("configuring tests/install"
        ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install -B ${consumer}
        -DCMAKE_C_COMPILER=${C_COMPILER} -DCMAKE_BUILD_TYPE=Release
        -DCMAKE_PREFIX_PATH=${PREFIX} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
        -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DSMOOTHFLOW_EXPECTED_VERSION=${VERSION})
    file(STRINGS "${consumer}/CMakeCache.txt" dir_line REGEX "^smoothflow_DIR:")
    string(REGEX REPLACE "^[^=]*=" "" smoothflow_dir "${dir_line}")
    require_in_prefix("find_package(smoothflow)'s smoothflow_DIR" "${smoothflow_dir}")
    run("building tests/install" ${CMAKE_COMMAND} --build ${consumer})
    file(READ "${consumer}/compile_commands.json" commands)
    string(REGEX MATCHALL "(-I|-isystem )[^ \"]+" includes "${commands}")
    foreach(include ${includes})
        string(REGEX REPLACE "^(-I|-isystem )" "" include "${include}")
        require_in_prefix("an include directory of the example" "${include}")
    endforeach()
    run_example(${consumer}/example)

#----------------------------------------------------------------- headers ----
elseif(MODE STREQUAL "headers")
    if(NOT CXX_COMPILER OR NOT OPENMM_INCLUDE_DIR)
        message(FATAL_ERROR "check_install.cmake: headers mode needs -DCXX_COMPILER and -DOPENMM_INCLUDE_DIR")
    endif()
    file(GLOB_RECURSE headers RELATIVE "${PREFIX}/${INCLUDEDIR}" "${PREFIX}/${INCLUDEDIR}/*.h")
    if(NOT headers)
        message(FATAL_ERROR "no headers installed in ${PREFIX}/${INCLUDEDIR}")
    endif()
    set(count 0)
    foreach(header ${headers})
        string(MAKE_C_IDENTIFIER "${header}" stem)
        file(WRITE "${WORK_DIR}/${stem}.cpp" "#include <${header}>\n")
        run("compiling installed header ${header} alone (C++17)"
            ${CXX_COMPILER} -std=c++17 -fsyntax-only -I${PREFIX}/${INCLUDEDIR}
            -I${OPENMM_INCLUDE_DIR} ${WORK_DIR}/${stem}.cpp)
        math(EXPR count "${count} + 1")
    endforeach()
    file(WRITE "${WORK_DIR}/smoothflow_c.c" "#include <smoothflow.h>\n")
    run("compiling installed smoothflow.h as C11"
        ${C_COMPILER} -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only
        -I${PREFIX}/${INCLUDEDIR} ${WORK_DIR}/smoothflow_c.c)
    message(STATUS "${count} installed headers compile on their own")
else()
    message(FATAL_ERROR "check_install.cmake: unknown MODE '${MODE}' (pkgconfig, cmake or headers)")
endif()
