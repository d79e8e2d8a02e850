#include "internal/SmoothFlowForceImpl.h"
#include "SmoothFlowKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "smoothflow.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

SmoothFlowForceImpl::SmoothFlowForceImpl(const SmoothFlowForce& owner) : owner(owner) {
}

vector<int> SmoothFlowForceImpl::mapParticles(const System& system, const SmoothFlowForce& force) {
    int numAtoms = force.getNumModelAtoms();
    int numParticles = system.getNumParticles();
    vector<int> mapped;
    if (force.getNumMolecules() == 0) {
        // The default mapping is only safe when it cannot silently pick a
        // subset of a larger System.
        if (numParticles != numAtoms)
            throw OpenMMException("SmoothFlowForce: the model has " + to_string(numAtoms) + " atoms but the System has " +
                                  to_string(numParticles) + " particles; call setParticles() or addMolecule() to say "
                                  "which particles the model applies to");
        for (int i = 0; i < numAtoms; i++) {
            // The same rule as for explicit molecules below: a virtual site has no mass and
            // its position follows other particles, so the model's energy cannot act on it.
            if (system.isVirtualSite(i))
                throw OpenMMException("SmoothFlowForce: particle " + to_string(i) + " (model atom " + to_string(i) +
                                      " under the default mapping, which takes the System's first " +
                                      to_string(numAtoms) + " particles) is a virtual site");
            mapped.push_back(i);
        }
        return mapped;
    }
    vector<int> owner(numParticles, -1);  // which molecule uses each particle
    for (int m = 0; m < force.getNumMolecules(); m++) {
        const vector<int>& molecule = force.getMoleculeParticles(m);
        if ((int) molecule.size() != numAtoms)
            throw OpenMMException("SmoothFlowForce: molecule " + to_string(m) + " has " + to_string(molecule.size()) +
                                  " particles but the model has " + to_string(numAtoms) + " atoms");
        for (int a = 0; a < numAtoms; a++) {
            int p = molecule[a];
            if (p < 0 || p >= numParticles)
                throw OpenMMException("SmoothFlowForce: particle index " + to_string(p) + " (model atom " + to_string(a) +
                                      " of molecule " + to_string(m) + ") is out of range: the System has " +
                                      to_string(numParticles) + " particles");
            if (owner[p] != -1)
                throw OpenMMException("SmoothFlowForce: particle " + to_string(p) + " is used twice (molecule " +
                                      to_string(owner[p]) + " and molecule " + to_string(m) + ")");
            if (system.isVirtualSite(p))
                throw OpenMMException("SmoothFlowForce: particle " + to_string(p) + " (model atom " + to_string(a) +
                                      " of molecule " + to_string(m) + ") is a virtual site");
            owner[p] = m;
            mapped.push_back(p);
        }
    }
    return mapped;
}

void SmoothFlowForceImpl::initialize(ContextImpl& context) {
    const System& system = context.getSystem();
    // The core refuses a box for this kind too; refusing here names the setting, before any kernel.
    if (owner.getModelKind() == SmoothFlowForce::FreeFormFlow && owner.usesPeriodicBoundaryConditions())
        throw OpenMMException("SmoothFlowForce: the model is a free-form flow over " +
                              to_string(owner.getNumModelAtoms()) + " particles, which is not periodic (its encoder "
                              "sees every pair of particles at its plain distance), but the force uses periodic "
                              "boundary conditions: call setUsesPeriodicBoundaryConditions(false)");
    particles = mapParticles(system, owner);
    kernel = context.getPlatform().createKernel(CalcSmoothFlowForceKernel::Name(), context);
    kernel.getAs<CalcSmoothFlowForceKernel>().initialize(system, owner, particles);
}

double SmoothFlowForceImpl::calcForcesAndEnergy(ContextImpl& context, bool includeForces, bool includeEnergy, int groups) {
    if ((groups & (1 << owner.getForceGroup())) != 0)
        return kernel.getAs<CalcSmoothFlowForceKernel>().execute(context, includeForces, includeEnergy);
    return 0.0;
}

vector<string> SmoothFlowForceImpl::getKernelNames() {
    return {CalcSmoothFlowForceKernel::Name()};
}

vector<pair<int, int> > SmoothFlowForceImpl::getBondedParticles() const {
    vector<pair<int, int> > bonds;
    const sf_model* model = owner.getModel().get();
    int numAtoms = sf_model_num_atoms(model);
    if (sf_model_flow_kind(model) == SF_FLOW_FREE_FORM) {
        // No Z-matrix, but the energy couples every particle of a copy: bonding each to the
        // copy's first particle keeps the copy one molecule for OpenMM, as its bonds do a molecule's.
        for (size_t first = 0; first + numAtoms <= particles.size(); first += numAtoms)
            for (int a = 1; a < numAtoms; a++)
                bonds.emplace_back(particles[first], particles[first + a]);
        return bonds;
    }
    for (size_t first = 0; first + numAtoms <= particles.size(); first += numAtoms)
        for (int r = 1; r < numAtoms; r++) {
            int row[4];
            sf_model_zmatrix_row(model, r, row);
            bonds.emplace_back(particles[first + row[0]], particles[first + row[1]]);
        }
    return bonds;
}

long long SmoothFlowForceImpl::getWallCount() const {
    return kernel.getAs<CalcSmoothFlowForceKernel>().getWallCount();
}
