/*
 * One platform's SmoothFlow kernel against the Reference platform, without
 * Python, on the C++ test fixtures (tests/data: tiny under the error policy,
 * wall under the wall policy), in every precision the platform has: every
 * configuration; many molecules spread over periodic images; the wall count;
 * a bond outside the support reported with Reference's message, and the
 * recovery.  Tolerances as in docs/gpu-platforms.md.
 *
 *   TestDeviceSmoothFlowForce <platform> <OpenMM's platform library> <SmoothFlow's kernel library> [--require-device]
 *
 * e.g. OpenCL .../libOpenMMOpenCL.so .../libSmoothFlowPluginOpenCL.so.  When
 * the platform cannot be loaded (CUDA without a driver) or has no usable
 * device, the test is skipped (exit 77); with --require-device it fails
 * instead, unless SMOOTHFLOW_ALLOW_NO_<PLATFORM>=1 (e.g.
 * SMOOTHFLOW_ALLOW_NO_OPENCL=1, as for core/tests/kernel_math).
 */
#include "ReferenceSmoothFlowKernelFactory.h"
#include "SmoothFlowForce.h"
#include "SmoothFlowTestUtilities.h"
#include "openmm/Context.h"
#include "openmm/Platform.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>

using namespace SmoothFlowPlugin;
using namespace SmoothFlowTest;
using namespace OpenMM;
using namespace std;

namespace {

const int kSkip = 77;
string platformName;

struct Result {
    double energy;
    vector<Vec3> forces;
};

Result evaluate(Context& context, const vector<Vec3>& positions) {
    context.setPositions(positions);
    State state = context.getState(State::Energy | State::Forces);
    return {state.getPotentialEnergy(), state.getForces()};
}

void assertClose(const Result& expected, const Result& found, double energyTolerance, double forceTolerance, const string& what) {
    if (!(fabs(found.energy - expected.energy) <= energyTolerance * max(1.0, fabs(expected.energy))))
        throw OpenMMException(what + ": energy " + to_string(found.energy) + " differs from Reference's " + to_string(expected.energy));
    double largest = 1.0, error = 0.0;
    for (size_t i = 0; i < expected.forces.size(); i++)
        for (int k = 0; k < 3; k++) {
            largest = max(largest, fabs(expected.forces[i][k]));
            error = max(error, fabs(found.forces[i][k] - expected.forces[i][k]));
        }
    if (!(error <= forceTolerance * largest))
        throw OpenMMException(what + ": forces differ from Reference's by " + to_string(error) + " (largest component " +
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

/** One precision of the platform: its Precision property (none on a platform without one). */
struct Precision {
    string name;
    map<string, string> properties;
    double energyTolerance, forceTolerance;
};

// Energy, forces.  The fixtures are steeper than the Python tests' models:
// in float, tiny's configuration 3 (forces up to 2e4 kJ/mol/nm) has forces
// 1.3e-3 off (measured on PoCL; the others 2e-4 at most), so the force
// tolerance in float is 5e-3 here, against 5e-4 in
// tests/python/test_device_platforms.py.
vector<Precision> precisionsOf(Platform& platform) {
    const vector<string>& names = platform.getPropertyNames();
    if (find(names.begin(), names.end(), "Precision") == names.end())
        return {{"double", {}, 1e-9, 1e-9}};  // e.g. the CPU platform: the core in double
    return {{"double", {{"Precision", "double"}}, 1e-9, 1e-9},
            {"mixed", {{"Precision", "mixed"}}, 5e-5, 5e-3},
            {"single", {{"Precision", "single"}}, 5e-5, 5e-3}};
}

/** The positions the platform holds: in single and mixed precision OpenMM keeps them in float. */
vector<Vec3> held(const vector<Vec3>& positions, const Precision& precision) {
    if (precision.name == "double")
        return positions;
    vector<Vec3> rounded;
    for (const Vec3& x : positions)
        rounded.push_back(Vec3((float) x[0], (float) x[1], (float) x[2]));
    return rounded;
}

void testMatchesReference(const string& model, const Precision& precision) {
    vector<Configuration> configurations = readReference(dataFile(model + ".reference.txt"));
    unique_ptr<System> system(createSystem(model, 1));
    VerletIntegrator i1(0.001), i2(0.001);
    Context reference(*system, i1, Platform::getPlatformByName("Reference"));
    Context context(*system, i2, Platform::getPlatformByName(platformName), precision.properties);
    for (size_t c = 0; c < configurations.size(); c++)
        assertClose(evaluate(reference, held(configurations[c].positions, precision)),
                    evaluate(context, configurations[c].positions), precision.energyTolerance, precision.forceTolerance,
                    model + " configuration " + to_string(c) + ", " + precision.name);
}

void testManyPeriodicMolecules(const Precision& precision) {
    // More molecules than OpenMM launches work-groups, each atom in its own image
    // in double.  In float each molecule is in its own image instead: a position
    // rounded to float several boxes out moves the tiny fixture's steep forces
    // (2e4 kJ/mol/nm) by 1e-2 of the largest (measured on PoCL), which is the
    // rounding, not the kernel (tests/python/test_device_platforms.py allows
    // for it per molecule).
    const bool inFloat = precision.name != "double";
    vector<Configuration> configurations = readReference(dataFile("tiny.reference.txt"));
    const int numMolecules = 40, n = 6;
    const double box = 2.0;
    unique_ptr<System> system(createSystem("tiny", numMolecules));
    system->setDefaultPeriodicBoxVectors(Vec3(box, 0, 0), Vec3(0, box, 0), Vec3(0, 0, box));
    dynamic_cast<SmoothFlowForce&>(system->getForce(0)).setUsesPeriodicBoundaryConditions(true);
    vector<Vec3> positions;
    for (int m = 0; m < numMolecules; m++)
        for (int a = 0; a < n; a++) {
            const Vec3 image = inFloat ? Vec3(m % 3 - 1, m % 5 - 2, m % 2) : Vec3((m + a) % 3 - 1, (m * a) % 5 - 2, m % 2);
            positions.push_back(configurations[m % configurations.size()].positions[a] + image * box);
        }
    VerletIntegrator i1(0.001), i2(0.001);
    Context reference(*system, i1, Platform::getPlatformByName("Reference"));
    Context context(*system, i2, Platform::getPlatformByName(platformName), precision.properties);
    assertClose(evaluate(reference, held(positions, precision)), evaluate(context, positions), precision.energyTolerance,
                precision.forceTolerance, "40 periodic molecules, " + precision.name);
}

void testWallCount(const Precision& precision) {
    vector<Configuration> configurations = readReference(dataFile("wall.reference.txt"));
    SmoothFlowForce* force;
    unique_ptr<System> system(createSystem("wall", 1, &force));
    VerletIntegrator i1(0.001), i2(0.001);
    Context reference(*system, i1, Platform::getPlatformByName("Reference"));
    Context context(*system, i2, Platform::getPlatformByName(platformName), precision.properties);
    for (size_t c = 0; c < configurations.size(); c++) {
        // Stretched 5 % about the first atom: some coordinates reach the wall zone.
        vector<Vec3> stretched = configurations[c].positions;
        for (Vec3& x : stretched)
            x = stretched[0] + (x - stretched[0]) * 1.05;
        assertClose(evaluate(reference, held(stretched, precision)), evaluate(context, stretched), precision.energyTolerance,
                    precision.forceTolerance, "wall configuration " + to_string(c) + " stretched, " + precision.name);
    }
    ASSERT(force->getWallCount(reference) > 0);
    ASSERT_EQUAL(force->getWallCount(reference), force->getWallCount(context));
}

string messageOf(Context& context, const vector<Vec3>& positions) {
    try {
        evaluate(context, positions);
    } catch (const OpenMMException& e) {
        return e.what();
    }
    throw OpenMMException("expected an OpenMMException from " + context.getPlatform().getName());
}

void testOutsideTheSupport(const Precision& precision) {
    Configuration c = readReference(dataFile("tiny.reference.txt"))[0];
    unique_ptr<System> system(createSystem("tiny", 2));
    VerletIntegrator i1(0.001), i2(0.001);
    Context reference(*system, i1, Platform::getPlatformByName("Reference"));
    Context context(*system, i2, Platform::getPlatformByName(platformName), precision.properties);
    vector<Vec3> positions = c.positions;
    for (const Vec3& x : c.positions)
        positions.push_back(x * 3.0);
    ASSERT_THROWS(evaluate(context, positions), "SmoothFlowForce: evaluation failed: molecule 1: bond",
                  "outside the flow's support", "[System particles ");
    // The device kernel has the core evaluate the failing molecule again: Reference's message.
    ASSERT_EQUAL(messageOf(reference, positions), messageOf(context, positions));
    // Cleared once reported: good positions evaluate again.
    vector<Vec3> good = c.positions;
    good.insert(good.end(), c.positions.begin(), c.positions.end());
    ASSERT(isfinite(evaluate(context, good).energy));
}

/** Why the platform cannot run here, or "" when it can. */
string unusable(const string& openmmLibrary, const string& smoothflowLibrary) {
    try {
        Platform::loadPluginLibrary(openmmLibrary);
    } catch (const exception& e) {
        return "OpenMM's " + platformName + " platform does not load: " + e.what();
    }
    try {
        Platform::loadPluginLibrary(smoothflowLibrary);  // runs its registerKernelFactories()
        if (!Platform::getPlatformByName(platformName).supportsKernels({"CalcSmoothFlowForce"}))
            return smoothflowLibrary + " did not register CalcSmoothFlowForce on " + platformName;
        VerletIntegrator integrator(0.001);
        unique_ptr<System> system(createSystem("tiny", 1));
        Context probe(*system, integrator, Platform::getPlatformByName(platformName));
    } catch (const exception& e) {
        return "no usable " + platformName + " platform or device: " + e.what();
    }
    return "";
}

} // namespace

int main(int argc, char* argv[]) {
    if (argc < 4 || argc > 5 || (argc == 5 && string(argv[4]) != "--require-device")) {
        cout << "usage: " << argv[0]
             << " <platform> <OpenMM platform library> <SmoothFlow kernel library> [--require-device]" << endl;
        return 1;
    }
    platformName = argv[1];
    try {
        registerSmoothFlowReferenceKernelFactories();
        string why = unusable(argv[2], argv[3]);
        if (!why.empty()) {
            cout << why << endl;
            // SMOOTHFLOW_ALLOW_NO_OPENCL=1 (as for core/tests/kernel_math), SMOOTHFLOW_ALLOW_NO_CUDA=1, ...
            string variable = "SMOOTHFLOW_ALLOW_NO_" + platformName;
            transform(variable.begin(), variable.end(), variable.begin(), ::toupper);
            const char* allow = getenv(variable.c_str());
            bool required = argc == 5 && !(allow && string(allow) == "1");
            return required ? 1 : kSkip;
        }
        for (const Precision& precision : precisionsOf(Platform::getPlatformByName(platformName))) {
            testMatchesReference("tiny", precision);
            testMatchesReference("wall", precision);
            testManyPeriodicMolecules(precision);
            testWallCount(precision);
            testOutsideTheSupport(precision);
            cout << platformName << " " << precision.name << ": matches Reference" << endl;
        }
    } catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
