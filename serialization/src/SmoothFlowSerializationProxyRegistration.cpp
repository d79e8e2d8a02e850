#include "SmoothFlowForce.h"
#include "SmoothFlowForceProxy.h"
#include "openmm/serialization/SerializationProxy.h"
#include <typeinfo>

// Register the proxy as soon as the library is loaded, whether it was linked
// in or opened with Platform::loadPluginLibrary: XmlSerializer then knows
// SmoothFlowForce without any call from the user.
#if defined(_MSC_VER)
    #include <windows.h>
    extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowSerializationProxies();
    BOOL WINAPI DllMain(HANDLE hModule, DWORD reason, LPVOID reserved) {
        if (reason == DLL_PROCESS_ATTACH)
            registerSmoothFlowSerializationProxies();
        return TRUE;
    }
#else
    extern "C" void __attribute__((constructor)) registerSmoothFlowSerializationProxies();
#endif

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowSerializationProxies() {
    OpenMM::SerializationProxy::registerProxy(typeid(SmoothFlowPlugin::SmoothFlowForce), new SmoothFlowPlugin::SmoothFlowForceProxy());
}
