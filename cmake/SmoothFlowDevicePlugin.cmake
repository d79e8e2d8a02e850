# smoothflow_device_plugin(<target> SOURCES <factory.cpp> [<more.cpp>] OPENMM_LIBRARY <libOpenMM<platform>>
#                          [LIBRARIES <...>] [DEFINITIONS <...>])
# A GPU platform's plugin library: its kernel factory plus the common kernels of
# platforms/common (compiled into each platform's library, as OpenMM compiles its
# common kernels), linked against OpenMM's platform library, installed in
# <prefix>/lib/plugins, and found at run time beside OpenMM's own platform plugins.
function(smoothflow_device_plugin target)
    cmake_parse_arguments(ARG "" "OPENMM_LIBRARY" "SOURCES;LIBRARIES;DEFINITIONS" ${ARGN})
    if(NOT TARGET SmoothFlowCommon)
        add_subdirectory(${PROJECT_SOURCE_DIR}/platforms/common ${CMAKE_BINARY_DIR}/platforms/common)
    endif()
    add_library(${target} SHARED ${ARG_SOURCES} $<TARGET_OBJECTS:SmoothFlowCommon>)
    target_include_directories(${target}
        PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include
        PRIVATE ${PROJECT_SOURCE_DIR}/platforms/common/src ${PROJECT_SOURCE_DIR}/openmmapi/src)
    target_compile_definitions(${target} PRIVATE SMOOTHFLOW_BUILDING_SHARED_LIBRARY ${ARG_DEFINITIONS})
    target_link_libraries(${target} PUBLIC SmoothFlowPlugin
                          PRIVATE smoothflow smoothflow_kernel_source ${ARG_OPENMM_LIBRARY} ${ARG_LIBRARIES})
    # Installed in <prefix>/lib/plugins; OpenMM's platform library is in OpenMM's lib/plugins.
    set_target_properties(${target} PROPERTIES
        BUILD_WITH_INSTALL_RPATH ON
        INSTALL_RPATH "${SMOOTHFLOW_RPATH};\$ORIGIN/..;\$ORIGIN/../OpenMM.libs/lib/plugins;${OPENMM_DIR}/lib/plugins")
    if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
        target_compile_options(${target} PRIVATE -Wall -Wextra)
    endif()
    install(TARGETS ${target} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/plugins)
endfunction()
