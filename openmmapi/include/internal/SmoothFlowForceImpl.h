#ifndef OPENMM_SMOOTHFLOW_FORCE_IMPL_H_
#define OPENMM_SMOOTHFLOW_FORCE_IMPL_H_

#include "SmoothFlowForce.h"
#include "openmm/Kernel.h"
#include "openmm/System.h"
#include "openmm/internal/ForceImpl.h"
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * The per-Context part of a SmoothFlowForce: checks the particle mapping
 * against the System and drives the platform's kernel.
 */
class OPENMM_EXPORT_SMOOTHFLOW SmoothFlowForceImpl : public OpenMM::ForceImpl {
public:
    SmoothFlowForceImpl(const SmoothFlowForce& owner);
    void initialize(OpenMM::ContextImpl& context) override;
    const SmoothFlowForce& getOwner() const override {
        return owner;
    }
    void updateContextState(OpenMM::ContextImpl& /*context*/, bool& /*forcesInvalid*/) override {
        // The force has no state of its own.
    }
    double calcForcesAndEnergy(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy, int groups) override;
    std::map<std::string, double> getDefaultParameters() override {
        return std::map<std::string, double>();
    }
    std::vector<std::string> getKernelNames() override;
    /**
     * The Z-matrix bonds of every molecule, so that OpenMM keeps each molecule
     * whole when it wraps positions into the box or scales them (barostats); for
     * a free-form model, each particle of a copy bonded to the copy's first.
     */
    std::vector<std::pair<int, int> > getBondedParticles() const override;
    long long getWallCount() const;
    /**
     * The particles of all molecules of a force in a System, molecule after
     * molecule: the force's molecules, or particles 0..N-1 when it has none.
     * Throws an OpenMMException naming the problem when an index is out of
     * range, a particle is used twice, or the count does not match the model.
     */
    static std::vector<int> mapParticles(const OpenMM::System& system, const SmoothFlowForce& force);
private:
    const SmoothFlowForce& owner;
    std::vector<int> particles;
    OpenMM::Kernel kernel;
};

} // namespace SmoothFlowPlugin

#endif /*OPENMM_SMOOTHFLOW_FORCE_IMPL_H_*/
