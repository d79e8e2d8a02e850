#ifndef OPENMM_WINDOWS_EXPORT_SMOOTHFLOW_H_
#define OPENMM_WINDOWS_EXPORT_SMOOTHFLOW_H_

/*
 * OPENMM_EXPORT_SMOOTHFLOW marks the plugin's public classes.  On Windows it
 * selects dllexport while the library itself is built and dllimport for its
 * users; elsewhere symbols are visible by default and it is empty.
 */
#if defined(_MSC_VER)
    #if defined(SMOOTHFLOW_BUILDING_SHARED_LIBRARY)
        #define OPENMM_EXPORT_SMOOTHFLOW __declspec(dllexport)
    #else
        #define OPENMM_EXPORT_SMOOTHFLOW __declspec(dllimport)
    #endif
#else
    #define OPENMM_EXPORT_SMOOTHFLOW
#endif

#endif /* OPENMM_WINDOWS_EXPORT_SMOOTHFLOW_H_ */
