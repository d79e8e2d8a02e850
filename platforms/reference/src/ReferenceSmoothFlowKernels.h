#ifndef REFERENCE_SMOOTHFLOW_KERNELS_H_
#define REFERENCE_SMOOTHFLOW_KERNELS_H_

#include "SmoothFlowKernels.h"
#include "smoothflow.h"
#include <memory>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * The Reference platform's SmoothFlow kernel: a thin adapter that gathers the
 * molecules' positions into the core's batch layout, calls sf_evaluate once,
 * and scatters the forces back onto the particles.
 */
class ReferenceCalcSmoothFlowForceKernel : public CalcSmoothFlowForceKernel {
public:
    ReferenceCalcSmoothFlowForceKernel(const std::string& name, const OpenMM::Platform& platform);
    ~ReferenceCalcSmoothFlowForceKernel();
    void initialize(const OpenMM::System& system, const SmoothFlowForce& force, const std::vector<int>& particles) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;
    long long getWallCount() const override;
private:
    std::shared_ptr<const sf_model> model;
    sf_workspace* workspace;
    std::vector<int> particles;             // batch x N, model atom order
    std::vector<double> positions, forces;  // batch x N x 3
    std::vector<double> energies;           // batch
    int numMolecules;
    bool usePeriodic;
    long long wallCount;
};

} // namespace SmoothFlowPlugin

#endif /*REFERENCE_SMOOTHFLOW_KERNELS_H_*/
