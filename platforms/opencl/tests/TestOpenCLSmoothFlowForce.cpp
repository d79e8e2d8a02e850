/*
 * The OpenCL platform's SmoothFlow kernel against the Reference platform, on
 * the C++ test fixtures (tests/data: tiny under the error policy, wall under
 * the wall policy), without Python: every configuration in double, mixed and
 * single precision; many molecules spread over periodic images; the wall
 * count; a bond outside the support named as on Reference.  Tolerances as in
 * docs/gpu-platforms.md.  Without an OpenCL device it fails, unless
 * SMOOTHFLOW_ALLOW_NO_OPENCL=1, when it is skipped (exit 77).
 */
#include "OpenCLSmoothFlowKernelFactory.h"
#include "ReferenceSmoothFlowKernelFactory.h"
#include "SmoothFlowForce.h"
#include "SmoothFlowTestUtilities.h"
#include "openmm/Context.h"
#include "openmm/Platform.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <memory>

using namespace SmoothFlowPlugin;
using namespace SmoothFlowTest;
using namespace OpenMM;
using namespace std;

namespace {

struct Result {
    double energy;
    vector<Vec3> forces;
};

Result evaluate(Context& context, const vector<Vec3>& positions) {
    context.setPositions(positions);
    State state = context.getState(State::Energy | State::Forces);
    return {state.getPotentialEnergy(), state.getForces()};
}

void assertClose(const Result& expected, const Result& found, double energyTolerance, double forceTolerance) {
    if (!(fabs(found.energy - expected.energy) <= energyTolerance * max(1.0, fabs(expected.energy))))
        throw OpenMMException("energy " + to_string(found.energy) + " differs from Reference's " + to_string(expected.energy));
    double largest = 1.0, error = 0.0;
    for (size_t i = 0; i < expected.forces.size(); i++)
        for (int k = 0; k < 3; k++) {
            largest = max(largest, fabs(expected.forces[i][k]));
            error = max(error, fabs(found.forces[i][k] - expected.forces[i][k]));
        }
    if (!(error <= forceTolerance * largest))
        throw OpenMMException("forces differ from Reference's by " + to_string(error) + " (largest component " +
                              to_string(largest) + ")");
}

/** numMolecules copies of the model on consecutive particles. */
System* createSystem(const string& model, int numMolecules, SmoothFlowForce** forceOut = nullptr) {
    SmoothFlowForce* force = new SmoothFlowForce(dataFile(model + ".safetensors"));
    const int n = force->getNumModelAtoms();
    System* system = new System();
    for (int i = 0; i < n * numMolecules; i++)
        system->addParticle(12.0);
    for (int m = 0; m < numMolecules; m++) {
        vector<int> particles(n);
        for (int a = 0; a < n; a++)
            particles[a] = m * n + a;
        force->addMolecule(particles);
    }
    system->addForce(force);
    if (forceOut)
        *forceOut = force;
    return system;
}

// Energy, forces.  The fixtures are steeper than the Python tests' models:
// in float, tiny's configuration 3 (forces up to 2e4 kJ/mol/nm) has forces
// 1.3e-3 off (measured; the others 2e-4 at most), so the force tolerance in
// float is 5e-3 here, against 5e-4 in tests/python/test_openmm_opencl.py.
const double kTolerance[3][2] = {{1e-9, 1e-9}, {5e-5, 5e-3}, {5e-5, 5e-3}};
const char* const kPrecisions[3] = {"double", "mixed", "single"};

void testMatchesReference(const string& model) {
    vector<Configuration> configurations = readReference(dataFile(model + ".reference.txt"));
    unique_ptr<System> system(createSystem(model, 1));
    VerletIntegrator i1(0.001), i2(0.001), i3(0.001), i4(0.001);
    VerletIntegrator* integrators[3] = {&i2, &i3, &i4};
    Context reference(*system, i1, Platform::getPlatformByName("Reference"));
    for (int p = 0; p < 3; p++) {
        Context context(*system, *integrators[p], Platform::getPlatformByName("OpenCL"), {{"Precision", kPrecisions[p]}});
        for (const Configuration& c : configurations)
            assertClose(evaluate(reference, c.positions), evaluate(context, c.positions), kTolerance[p][0], kTolerance[p][1]);
    }
}

void testManyPeriodicMolecules() {
    // More molecules than OpenMM launches work-groups, each atom in its own image.
    vector<Configuration> configurations = readReference(dataFile("tiny.reference.txt"));
    const int numMolecules = 40, n = 6;
    const double box = 2.0;
    unique_ptr<System> system(createSystem("tiny", numMolecules));
    system->setDefaultPeriodicBoxVectors(Vec3(box, 0, 0), Vec3(0, box, 0), Vec3(0, 0, box));
    dynamic_cast<SmoothFlowForce&>(system->getForce(0)).setUsesPeriodicBoundaryConditions(true);
    vector<Vec3> positions;
    for (int m = 0; m < numMolecules; m++)
        for (int a = 0; a < n; a++)
            positions.push_back(configurations[m % configurations.size()].positions[a] +
                                Vec3((m + a) % 3 - 1, (m * a) % 5 - 2, m % 2) * box);
    VerletIntegrator i1(0.001), i2(0.001);
    Context reference(*system, i1, Platform::getPlatformByName("Reference"));
    Context context(*system, i2, Platform::getPlatformByName("OpenCL"), {{"Precision", "double"}});
    assertClose(evaluate(reference, positions), evaluate(context, positions), 1e-9, 1e-9);
}

void testWallCount() {
    vector<Configuration> configurations = readReference(dataFile("wall.reference.txt"));
    SmoothFlowForce* force;
    unique_ptr<System> system(createSystem("wall", 1, &force));
    VerletIntegrator i1(0.001), i2(0.001);
    Context reference(*system, i1, Platform::getPlatformByName("Reference"));
    Context context(*system, i2, Platform::getPlatformByName("OpenCL"), {{"Precision", "double"}});
    for (const Configuration& c : configurations) {
        // Stretched 5 % about the first atom: some coordinates reach the wall zone.
        vector<Vec3> stretched = c.positions;
        for (Vec3& x : stretched)
            x = c.positions[0] + (x - c.positions[0]) * 1.05;
        assertClose(evaluate(reference, stretched), evaluate(context, stretched), 1e-9, 1e-9);
    }
    ASSERT(force->getWallCount(reference) > 0);
    ASSERT_EQUAL(force->getWallCount(reference), force->getWallCount(context));
}

void testOutsideTheSupport() {
    Configuration c = readReference(dataFile("tiny.reference.txt"))[0];
    unique_ptr<System> system(createSystem("tiny", 2));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("OpenCL"), {{"Precision", "single"}});
    vector<Vec3> positions = c.positions;
    for (const Vec3& x : c.positions)
        positions.push_back(x * 3.0);
    ASSERT_THROWS(evaluate(context, positions), "SmoothFlowForce: evaluation failed: molecule 1: bond",
                  "outside the flow's support", "[System particles ");
    // Cleared once reported: good positions evaluate again.
    vector<Vec3> good = c.positions;
    good.insert(good.end(), c.positions.begin(), c.positions.end());
    ASSERT(isfinite(evaluate(context, good).energy));
}

} // namespace

int main() {
    try {
        Platform::loadPluginLibrary(OPENMM_OPENCL_PLUGIN);
        registerSmoothFlowReferenceKernelFactories();
        registerSmoothFlowOpenCLKernelFactories();
        try {
            VerletIntegrator integrator(0.001);
            unique_ptr<System> system(createSystem("tiny", 1));
            Context probe(*system, integrator, Platform::getPlatformByName("OpenCL"));
        } catch (const exception& e) {
            const char* allow = getenv("SMOOTHFLOW_ALLOW_NO_OPENCL");
            cout << "No usable OpenCL platform or device: " << e.what() << endl;
            if (allow && string(allow) == "1")
                return 77;
            return 1;
        }
        testMatchesReference("tiny");
        testMatchesReference("wall");
        testManyPeriodicMolecules();
        testWallCount();
        testOutsideTheSupport();
    } catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
