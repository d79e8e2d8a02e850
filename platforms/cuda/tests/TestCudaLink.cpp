/*
 * libSmoothFlowPluginCUDA.so links and loads without a GPU, and registers the
 * SmoothFlow kernel on OpenMM's CUDA platform, and only there, once that
 * platform exists.  The library needs libOpenMMCUDA.so, which needs the CUDA
 * driver (libcuda.so.1); without a driver the toolkit's stub of it is loaded
 * first (its calls fail with CUDA_ERROR_STUB_LIBRARY, but it resolves every
 * symbol, and a library loaded afterwards that needs libcuda.so.1 gets the
 * one already in the process).  Then the library is opened with every symbol
 * resolved (RTLD_NOW), its registration is harmless while OpenMM has no CUDA
 * platform, and after OpenMM's CUDA plugin is loaded the CUDA platform
 * supports CalcSmoothFlowForce while Reference does not.
 *
 *   TestCudaLink <libSmoothFlowPluginCUDA.so> <libOpenMMCUDA.so> <driver stub libcuda.so>
 */
#include "SmoothFlowKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include <dlfcn.h>
#include <iostream>
#include <string>
#include <vector>

using namespace OpenMM;
using namespace std;

namespace {

/* Load the CUDA driver or, without one, the stub at stubPath; `which` says which (or dlerror()). */
bool loadCudaDriverOrStub(const string& stubPath, string& which) {
    if (dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL) != nullptr) {
        which = "the installed CUDA driver (libcuda.so.1)";
        return true;
    }
    if (dlopen(stubPath.c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr) {
        which = "the CUDA toolkit's driver stub " + stubPath + " (no driver installed)";
        return true;
    }
    const char* error = dlerror();
    which = error ? error : "unknown dlopen error";
    return false;
}

bool hasPlatform(const string& name) {
    for (int i = 0; i < Platform::getNumPlatforms(); i++)
        if (Platform::getPlatform(i).getName() == name)
            return true;
    return false;
}

bool supportsSmoothFlow(const string& platform) {
    return Platform::getPlatformByName(platform).supportsKernels({SmoothFlowPlugin::CalcSmoothFlowForceKernel::Name()});
}

int fail(const string& message) {
    cerr << "FAIL: " << message << endl;
    return 1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        cerr << "usage: " << argv[0] << " <libSmoothFlowPluginCUDA.so> <libOpenMMCUDA.so> <driver stub libcuda.so>" << endl;
        return 2;
    }
    const string plugin = argv[1], openmmCuda = argv[2], stub = argv[3];
    try {
        string driver;
        if (!loadCudaDriverOrStub(stub, driver))
            return fail("neither a CUDA driver nor the stub " + stub + " loads: " + driver);
        cout << "CUDA driver: " << driver << endl;

        void* library = dlopen(plugin.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!library)
            return fail("the CUDA plugin library does not load: " + string(dlerror()));
        typedef void (*Registration)();
        Registration registerCuda = (Registration) dlsym(library, "registerSmoothFlowCUDAKernelFactories");
        Registration registerPlugin = (Registration) dlsym(library, "registerKernelFactories");
        if (!registerCuda || !registerPlugin)
            return fail(plugin + " lacks registerSmoothFlowCUDAKernelFactories or registerKernelFactories");

        // No CUDA platform yet (OpenMM's CUDA plugin is not loaded): nothing to register on, and no error.
        if (hasPlatform("CUDA"))
            return fail("a CUDA platform exists before OpenMM's CUDA plugin was loaded");
        registerCuda();
        registerPlugin();

        Platform::loadPluginLibrary(openmmCuda);
        if (!hasPlatform("CUDA"))
            return fail("loading " + openmmCuda + " registered no platform named CUDA");
        if (supportsSmoothFlow("CUDA"))
            return fail("the CUDA platform supports CalcSmoothFlowForce before the plugin registered it");
        registerCuda();
        if (!supportsSmoothFlow("CUDA"))
            return fail("registerSmoothFlowCUDAKernelFactories did not register CalcSmoothFlowForce on the CUDA platform");
        if (supportsSmoothFlow("Reference"))
            return fail("the CUDA plugin registered CalcSmoothFlowForce on the Reference platform");
        cout << "libSmoothFlowPluginCUDA loads and registers CalcSmoothFlowForce on the CUDA platform" << endl;
    } catch (const exception& e) {
        return fail(e.what());
    }
    cout << "PASS" << endl;
    return 0;
}
