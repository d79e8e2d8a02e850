#ifndef REFERENCE_SMOOTHFLOW_KERNEL_FACTORY_H_
#define REFERENCE_SMOOTHFLOW_KERNEL_FACTORY_H_

#include "internal/windowsExportSmoothFlow.h"
#include "openmm/KernelFactory.h"

namespace SmoothFlowPlugin {

/**
 * Creates the SmoothFlow kernels of the Reference (and CPU) platform.
 */
class ReferenceSmoothFlowKernelFactory : public OpenMM::KernelFactory {
public:
    OpenMM::KernelImpl* createKernelImpl(std::string name, const OpenMM::Platform& platform, OpenMM::ContextImpl& context) const override;
};

} // namespace SmoothFlowPlugin

/**
 * Register the factory with the Reference and CPU platforms.  OpenMM calls
 * registerKernelFactories() when it loads the library as a plugin; programs
 * that link the library directly (the tests) call this instead.
 */
extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowReferenceKernelFactories();

#endif /*REFERENCE_SMOOTHFLOW_KERNEL_FACTORY_H_*/
