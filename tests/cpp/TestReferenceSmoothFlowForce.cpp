/*
 * Tests of SmoothFlowForce on the Reference platform: energies and forces
 * against the core and against PyTorch (fixtures from tests/data), finite
 * differences, several molecules, force groups, periodic boxes, the wall
 * count, and every error the force reports.
 */

#include "ReferenceSmoothFlowKernelFactory.h"
#include "SmoothFlowForce.h"
#include "SmoothFlowTestUtilities.h"
#include "openmm/Context.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include "smoothflow.h"
#include <cmath>
#include <iostream>
#include <limits>
#include <memory>
#include <set>

using namespace SmoothFlowPlugin;
using namespace SmoothFlowTest;
using namespace OpenMM;
using namespace std;

static const double MOLAR_GAS_CONSTANT = 0.00831446261815324;  // kJ/mol/K

static System* createSystem(int numParticles, Force* force) {
    System* system = new System();
    for (int i = 0; i < numParticles; i++)
        system->addParticle(12.0);
    if (force != nullptr)
        system->addForce(force);
    return system;
}

static State evaluate(Context& context, const vector<Vec3>& positions, int groups = -1) {
    context.setPositions(positions);
    return context.getState(State::Energy | State::Forces, false, groups);
}

static void testGetters() {
    SmoothFlowForce tiny(dataFile("tiny.safetensors"));
    ASSERT_EQUAL(6, tiny.getNumModelAtoms());
    ASSERT_EQUAL_TOL(300.0, tiny.getTemperature(), 1e-15);
    ASSERT_EQUAL_TOL(MOLAR_GAS_CONSTANT * 300.0, tiny.getKT(), 1e-15);
    ASSERT_EQUAL(SmoothFlowForce::SupportError, tiny.getSupportPolicy());
    ASSERT(tiny.hasModelAtomInfo());
    ASSERT_EQUAL("C1", tiny.getModelAtomName(0));
    ASSERT_EQUAL("ACE", tiny.getModelAtomResidueName(0));
    ASSERT_EQUAL(0, tiny.getModelAtomResidueIndex(0));
    ASSERT_EQUAL("H", tiny.getModelAtomName(4));
    ASSERT_EQUAL("NME", tiny.getModelAtomResidueName(4));
    ASSERT_EQUAL(1, tiny.getModelAtomResidueIndex(4));
    ASSERT(tiny.getModelConfig().find("\"zmatrix\"") != string::npos);
    ASSERT(tiny.getModelBytes() == readBytes(dataFile("tiny.safetensors")));
    ASSERT_EQUAL(0, tiny.getNumMolecules());
    ASSERT(!tiny.usesPeriodicBoundaryConditions());
    ASSERT_THROWS(tiny.getModelAtomName(6), "model atom index 6", "out of range");

    unique_ptr<SmoothFlowForce> wall(SmoothFlowForce::createFromBytes(readBytes(dataFile("wall.safetensors"))));
    ASSERT_EQUAL(8, wall->getNumModelAtoms());
    ASSERT_EQUAL(SmoothFlowForce::SupportWall, wall->getSupportPolicy());
    ASSERT(!wall->hasModelAtomInfo());
    ASSERT_EQUAL("", wall->getModelAtomName(3));
    ASSERT_EQUAL(-1, wall->getModelAtomResidueIndex(3));
}

/** Energies and forces equal PyTorch's (the fixtures) and the core's own sf_evaluate. */
static void testMatchesReference(const string& model) {
    vector<Configuration> reference = readReference(dataFile(model + ".reference.txt"));
    SmoothFlowForce* force = new SmoothFlowForce(dataFile(model + ".safetensors"));
    int numAtoms = force->getNumModelAtoms();
    unique_ptr<System> system(createSystem(numAtoms, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));

    sf_workspace* workspace = nullptr;
    ASSERT_EQUAL(SF_OK, sf_workspace_new(force->getModel().get(), 1, &workspace, nullptr));
    for (const Configuration& c : reference) {
        State state = evaluate(context, c.positions);
        ASSERT_EQUAL_TOL(c.energy, state.getPotentialEnergy(), 1e-10);
        for (int i = 0; i < numAtoms; i++)
            ASSERT_EQUAL_VEC(c.forces[i], state.getForces()[i], 1e-8);

        vector<double> x, f(3 * numAtoms);
        for (const Vec3& p : c.positions)
            x.insert(x.end(), {p[0], p[1], p[2]});
        double energy;
        ASSERT_EQUAL(SF_OK, sf_evaluate(force->getModel().get(), workspace, 1, x.data(), nullptr, &energy, f.data(), nullptr, nullptr));
        ASSERT_EQUAL_TOL(energy, state.getPotentialEnergy(), 1e-13);
        for (int i = 0; i < numAtoms; i++)
            ASSERT_EQUAL_VEC(Vec3(f[3 * i], f[3 * i + 1], f[3 * i + 2]), state.getForces()[i], 1e-13);
    }
    sf_workspace_free(workspace);
}

/**
 * The forces are the negative gradient of the energy: fourth-order central
 * differences (the random test flows are steep, so second order would need
 * a step too small for the energy's rounding).
 */
static void testFiniteDifferences(const string& model, int configuration) {
    Configuration c = readReference(dataFile(model + ".reference.txt"))[configuration];
    SmoothFlowForce* force = new SmoothFlowForce(dataFile(model + ".safetensors"));
    int numAtoms = force->getNumModelAtoms();
    unique_ptr<System> system(createSystem(numAtoms, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    vector<Vec3> forces = evaluate(context, c.positions).getForces();
    const double h = 1e-6;
    double error = 0.0, norm = 0.0;
    for (int i = 0; i < numAtoms; i++)
        for (int k = 0; k < 3; k++) {
            double energy[4];
            const double steps[4] = {2 * h, h, -h, -2 * h};
            for (int s = 0; s < 4; s++) {
                vector<Vec3> x = c.positions;
                x[i][k] += steps[s];
                energy[s] = evaluate(context, x).getPotentialEnergy();
            }
            double derivative = (-energy[0] + 8 * energy[1] - 8 * energy[2] + energy[3]) / (12 * h);
            double difference = -derivative - forces[i][k];
            error += difference * difference;
            norm += forces[i][k] * forces[i][k];
        }
    if (!(sqrt(error) <= 1e-6 * max(1.0, sqrt(norm))))
        throwException(__FILE__, __LINE__, model + ": finite differences differ from the forces by " + to_string(sqrt(error)) +
                       " (|F| = " + to_string(sqrt(norm)) + ")");
}

/** Several copies in one System, mapped onto scattered particles, are one batch. */
static void testMultipleMolecules() {
    vector<Configuration> reference = readReference(dataFile("tiny.reference.txt"));
    SmoothFlowForce* force = new SmoothFlowForce(dataFile("tiny.safetensors"));
    const int numAtoms = 6, numMolecules = 3, numParticles = numAtoms * numMolecules + 2;
    // Molecule m's atom a sits at particle (a * numMolecules + m + 1) % numParticles:
    // interleaved, in no particular order, leaving two particles unused.
    vector<Vec3> positions(numParticles, Vec3(5.0, 5.0, 5.0));
    positions[numParticles - 1] = Vec3(-5.0, 1.0, 2.0);
    double expectedEnergy = 0.0;
    for (int m = 0; m < numMolecules; m++) {
        vector<int> particles;
        for (int a = 0; a < numAtoms; a++) {
            int p = (a * numMolecules + m + 1) % numParticles;
            particles.push_back(p);
            positions[p] = reference[m].positions[a] + Vec3(3.0 * m, 0, 0);
        }
        ASSERT_EQUAL(m, force->addMolecule(particles));
        expectedEnergy += reference[m].energy;
    }
    ASSERT_EQUAL(numMolecules, force->getNumMolecules());
    unique_ptr<System> system(createSystem(numParticles, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    State state = evaluate(context, positions);
    ASSERT_EQUAL_TOL(expectedEnergy, state.getPotentialEnergy(), 1e-10);
    set<int> used;
    for (int m = 0; m < numMolecules; m++)
        for (int a = 0; a < numAtoms; a++) {
            int p = force->getMoleculeParticles(m)[a];
            used.insert(p);
            ASSERT_EQUAL_VEC(reference[m].forces[a], state.getForces()[p], 1e-8);
        }
    for (int p = 0; p < numParticles; p++)
        if (used.count(p) == 0)
            ASSERT_EQUAL_VEC(Vec3(), state.getForces()[p], 0.0);

    // The Z-matrix bonds make each copy one OpenMM molecule (kept whole by
    // periodic wrapping and barostats).
    for (const vector<int>& molecule : context.getMolecules()) {
        set<int> members(molecule.begin(), molecule.end());
        for (int m = 0; m < numMolecules; m++) {
            const vector<int>& particles = force->getMoleculeParticles(m);
            int inside = 0;
            for (int p : particles)
                inside += members.count(p);
            ASSERT(inside == 0 || inside == numAtoms);
        }
    }

    // setMoleculeParticles changes one copy; setParticles leaves one.
    force->setMoleculeParticles(1, force->getMoleculeParticles(1));
    force->setParticles(force->getMoleculeParticles(2));
    ASSERT_EQUAL(1, force->getNumMolecules());
}

static void testForceGroups() {
    Configuration c = readReference(dataFile("tiny.reference.txt"))[0];
    SmoothFlowForce* force = new SmoothFlowForce(dataFile("tiny.safetensors"));
    force->setForceGroup(3);
    unique_ptr<System> system(createSystem(6, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    ASSERT_EQUAL_TOL(c.energy, evaluate(context, c.positions, 1 << 3).getPotentialEnergy(), 1e-10);
    State other = evaluate(context, c.positions, 1 << 0);
    ASSERT_EQUAL(0.0, other.getPotentialEnergy());
    ASSERT_EQUAL_VEC(Vec3(), other.getForces()[0], 0.0);
}

/** Periodic: translating the molecule, or one atom, by box vectors changes nothing. */
static void testPeriodic() {
    Configuration c = readReference(dataFile("tiny.reference.txt"))[1];
    SmoothFlowForce* force = new SmoothFlowForce(dataFile("tiny.safetensors"));
    force->setUsesPeriodicBoundaryConditions(true);
    ASSERT(force->usesPeriodicBoundaryConditions());
    unique_ptr<System> system(createSystem(6, force));
    Vec3 a(2.5, 0, 0), b(0.4, 2.6, 0), cc(-0.3, 0.5, 2.7);  // triclinic, reduced form
    system->setDefaultPeriodicBoxVectors(a, b, cc);
    ASSERT(system->usesPeriodicBoundaryConditions());
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    State reference = evaluate(context, c.positions);
    ASSERT_EQUAL_TOL(c.energy, reference.getPotentialEnergy(), 1e-10);
    for (Vec3 shift : {a, b, cc, a * 2 - b + cc * 3, cc * -1}) {
        vector<Vec3> x = c.positions;
        for (Vec3& p : x)
            p += shift;
        State state = evaluate(context, x);
        ASSERT_EQUAL_TOL(reference.getPotentialEnergy(), state.getPotentialEnergy(), 1e-10);
        for (int i = 0; i < 6; i++)
            ASSERT_EQUAL_VEC(reference.getForces()[i], state.getForces()[i], 1e-8);
        x = c.positions;
        x[2] += shift;  // split across the box: minimum image bonds
        state = evaluate(context, x);
        ASSERT_EQUAL_TOL(reference.getPotentialEnergy(), state.getPotentialEnergy(), 1e-10);
        for (int i = 0; i < 6; i++)
            ASSERT_EQUAL_VEC(reference.getForces()[i], state.getForces()[i], 1e-8);
    }
}

/** The wall policy counts coordinates in its zone; the error policy never does. */
static void testWallCount() {
    vector<Configuration> reference = readReference(dataFile("wall.reference.txt"));
    SmoothFlowForce* force = new SmoothFlowForce(dataFile("wall.safetensors"));
    unique_ptr<System> system(createSystem(8, force));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    ASSERT_EQUAL(0, force->getWallCount(context));
    evaluate(context, reference[0].positions);  // margin 0.1 from the edges: outside the zone
    ASSERT_EQUAL(0, force->getWallCount(context));
    evaluate(context, reference[3].positions);  // bond 0 at u = 0.03
    long long count = force->getWallCount(context);
    ASSERT(count >= 1);
    State beyond = evaluate(context, reference[4].positions);  // bond 0 at u = 1.3
    ASSERT(force->getWallCount(context) >= count + 1);
    ASSERT_EQUAL_TOL(reference[4].energy, beyond.getPotentialEnergy(), 1e-10);
}

static void testModelErrors() {
    ASSERT_THROWS(SmoothFlowForce("no/such/model.safetensors"), "cannot open", "no/such/model.safetensors");
    ASSERT_THROWS(delete SmoothFlowForce::createFromBytes(vector<char>{'n', 'o', 't', ' ', 'a', ' ', 'm', 'o', 'd', 'e', 'l'}),
                  "SmoothFlowForce: cannot load model bytes: ");
    vector<char> truncated = readBytes(dataFile("tiny.safetensors"));
    truncated.resize(truncated.size() - 100);
    ASSERT_THROWS(delete SmoothFlowForce::createFromBytes(truncated), "SmoothFlowForce: cannot load model bytes: ");
    ASSERT_THROWS(delete SmoothFlowForce::createFromBytes(vector<char>()), "SmoothFlowForce: cannot load model bytes: ");
}

static void testParticleErrors() {
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    ASSERT_THROWS(force.setParticles({0, 1, 2, 3, 4}), "exactly 6", "5 were given");
    ASSERT_THROWS(force.addMolecule({0, 1, 2, 3, 4, 5, 6}), "exactly 6", "7 were given");
    ASSERT_THROWS(force.setParticles({0, 1, 2, 3, 4, 2}), "particle 2 appears twice");
    ASSERT_THROWS(force.setParticles({0, 1, 2, 3, -4, 5}), "-4", "negative");
    ASSERT_THROWS(force.getMoleculeParticles(0), "molecule index 0", "out of range");
    ASSERT_THROWS(force.setMoleculeParticles(1, {0, 1, 2, 3, 4, 5}), "molecule index 1", "out of range");
    VerletIntegrator integrator(0.001);
    Platform& platform = Platform::getPlatformByName("Reference");

    // Default mapping with the wrong number of particles.
    {
        unique_ptr<System> system(createSystem(7, new SmoothFlowForce(dataFile("tiny.safetensors"))));
        ASSERT_THROWS(Context(*system, integrator, platform), "6 atoms", "7 particles", "setParticles");
    }
    // An index beyond the System.
    {
        SmoothFlowForce* f = new SmoothFlowForce(dataFile("tiny.safetensors"));
        f->setParticles({0, 1, 2, 3, 4, 10});
        unique_ptr<System> system(createSystem(6, f));
        ASSERT_THROWS(Context(*system, integrator, platform), "particle index 10", "out of range", "6 particles");
    }
    // A particle in two molecules.
    {
        SmoothFlowForce* f = new SmoothFlowForce(dataFile("tiny.safetensors"));
        f->addMolecule({0, 1, 2, 3, 4, 5});
        f->addMolecule({6, 7, 8, 9, 10, 3});
        unique_ptr<System> system(createSystem(11, f));
        ASSERT_THROWS(Context(*system, integrator, platform), "particle 3 is used twice", "molecule 0", "molecule 1");
    }
}

static void testEvaluationErrors() {
    Configuration c = readReference(dataFile("tiny.reference.txt"))[0];
    unique_ptr<System> system(createSystem(6, new SmoothFlowForce(dataFile("tiny.safetensors"))));
    VerletIntegrator integrator(0.001);
    Context context(*system, integrator, Platform::getPlatformByName("Reference"));
    vector<Vec3> x = c.positions;
    x[4][1] = numeric_limits<double>::quiet_NaN();
    ASSERT_THROWS(evaluate(context, x), "SmoothFlowForce: evaluation failed", "not finite");
    // Stretched to three times its size, every bond leaves the support.
    x = c.positions;
    for (Vec3& p : x)
        p *= 3.0;
    ASSERT_THROWS(evaluate(context, x), "SmoothFlowForce: evaluation failed", "support");
    // And the Context still works afterwards.
    ASSERT_EQUAL_TOL(c.energy, evaluate(context, c.positions).getPotentialEnergy(), 1e-10);
}

int main() {
    try {
        registerSmoothFlowReferenceKernelFactories();
        testGetters();
        testMatchesReference("tiny");
        testMatchesReference("wall");
        testFiniteDifferences("tiny", 0);
        testFiniteDifferences("tiny", 3);
        testFiniteDifferences("wall", 1);
        testFiniteDifferences("wall", 3);  // in the wall zone
        testFiniteDifferences("wall", 4);  // beyond the support
        testMultipleMolecules();
        testForceGroups();
        testPeriodic();
        testWallCount();
        testModelErrors();
        testParticleErrors();
        testEvaluationErrors();
    }
    catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
