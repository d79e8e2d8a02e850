#ifndef SMOOTHFLOW_KERNELS_H_
#define SMOOTHFLOW_KERNELS_H_

#include "SmoothFlowForce.h"
#include "openmm/KernelImpl.h"
#include "openmm/Platform.h"
#include "openmm/System.h"
#include <string>
#include <vector>

namespace OpenMM {
class ContextImpl;
}

namespace SmoothFlowPlugin {

/**
 * This kernel is invoked by SmoothFlowForce to calculate the forces acting on
 * the system and the energy of the system.  Each platform implements it.
 */
class CalcSmoothFlowForceKernel : public OpenMM::KernelImpl {
public:
    static std::string Name() {
        return "CalcSmoothFlowForce";
    }
    CalcSmoothFlowForceKernel(const std::string& name, const OpenMM::Platform& platform) : OpenMM::KernelImpl(name, platform) {
    }
    /**
     * Initialize the kernel.
     *
     * @param system       the System this kernel will be applied to
     * @param force        the SmoothFlowForce this kernel will be used for
     * @param particles    the checked particle indices of all molecules, molecule
     *                     after molecule, each in model atom order (the default
     *                     mapping already resolved by SmoothFlowForceImpl)
     */
    virtual void initialize(const OpenMM::System& system, const SmoothFlowForce& force, const std::vector<int>& particles) = 0;
    /**
     * Execute the kernel to calculate the forces and/or energy.
     *
     * @param context        the context in which to execute this kernel
     * @param includeForces  true if forces should be calculated
     * @param includeEnergy  true if the energy should be calculated
     * @return the potential energy due to the force, in kJ/mol
     */
    virtual double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) = 0;
    /**
     * Get the number of internal coordinates found in the wall zone, summed over
     * all evaluations of this kernel.
     */
    virtual long long getWallCount() const = 0;
};

} // namespace SmoothFlowPlugin

#endif /*SMOOTHFLOW_KERNELS_H_*/
