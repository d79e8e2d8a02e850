#ifndef SMOOTHFLOW_TEST_UTILITIES_H_
#define SMOOTHFLOW_TEST_UTILITIES_H_

/*
 * Helpers shared by the plugin's C++ tests: fixture files (written by
 * tests/data/make_fixtures.py) and exception checks.
 */

#include "openmm/OpenMMException.h"
#include "openmm/Vec3.h"
#include "openmm/internal/AssertionUtilities.h"
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace SmoothFlowTest {

inline std::string dataFile(const std::string& name) {
    return std::string(SMOOTHFLOW_TEST_DATA_DIR) + "/" + name;
}

inline std::vector<char> readBytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        throw OpenMM::OpenMMException("cannot open test fixture " + path + " (run tests/data/make_fixtures.py)");
    return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/** One configuration of <model>.reference.txt: positions and PyTorch's energy and forces. */
struct Configuration {
    std::vector<OpenMM::Vec3> positions, forces;
    double energy;
};

inline std::vector<Configuration> readReference(const std::string& path) {
    std::ifstream in(path);
    if (!in)
        throw OpenMM::OpenMMException("cannot open test fixture " + path + " (run tests/data/make_fixtures.py)");
    std::stringstream numbers;
    std::string line;
    while (std::getline(in, line))
        if (!line.empty() && line[0] != '#')
            numbers << line << '\n';
    int numAtoms, numConfigurations;
    numbers >> numAtoms >> numConfigurations;
    std::vector<Configuration> result(numConfigurations);
    for (Configuration& c : result) {
        numbers >> c.energy;
        c.positions.resize(numAtoms);
        c.forces.resize(numAtoms);
        for (int i = 0; i < numAtoms; i++)
            numbers >> c.positions[i][0] >> c.positions[i][1] >> c.positions[i][2] >> c.forces[i][0] >> c.forces[i][1] >> c.forces[i][2];
    }
    if (!numbers)
        throw OpenMM::OpenMMException("malformed test fixture " + path);
    return result;
}

/** Assert that f throws an OpenMMException whose message contains every fragment. */
inline void assertThrows(const std::function<void()>& f, const std::vector<std::string>& fragments, const char* file, int line) {
    try {
        f();
    }
    catch (const OpenMM::OpenMMException& e) {
        std::string message = e.what();
        for (const std::string& fragment : fragments)
            if (message.find(fragment) == std::string::npos)
                OpenMM::throwException(file, line, "message '" + message + "' does not mention '" + fragment + "'");
        return;
    }
    OpenMM::throwException(file, line, "expected an OpenMMException");
}

#define ASSERT_THROWS(statement, ...) SmoothFlowTest::assertThrows([&]() { statement; }, {__VA_ARGS__}, __FILE__, __LINE__)

} // namespace SmoothFlowTest

#endif /*SMOOTHFLOW_TEST_UTILITIES_H_*/
