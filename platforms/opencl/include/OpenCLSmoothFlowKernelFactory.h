#ifndef OPENCL_SMOOTHFLOW_KERNEL_FACTORY_H_
#define OPENCL_SMOOTHFLOW_KERNEL_FACTORY_H_

#include "internal/windowsExportSmoothFlow.h"
#include "openmm/KernelFactory.h"

namespace SmoothFlowPlugin {

/**
 * Creates the SmoothFlow kernels of the OpenCL platform: the common kernels
 * (platforms/common) on the platform's first OpenCL context.
 */
class OpenCLSmoothFlowKernelFactory : public OpenMM::KernelFactory {
public:
    OpenMM::KernelImpl* createKernelImpl(std::string name, const OpenMM::Platform& platform, OpenMM::ContextImpl& context) const override;
};

} // namespace SmoothFlowPlugin

/**
 * Register the factory with the OpenCL platform.  OpenMM calls
 * registerKernelFactories() when it loads the library as a plugin; programs
 * that link the library directly call this instead.
 */
extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowOpenCLKernelFactories();

#endif /*OPENCL_SMOOTHFLOW_KERNEL_FACTORY_H_*/
