/* sf_version.c -- the version of the library that is loaded.
 *
 * Compiled from the header's macros, so the library reports the version of
 * the header it was built with; a program compares these answers with the
 * macros of the header it was compiled against. */
#include "smoothflow.h"

const char *sf_version(void) { return SF_VERSION_STRING; }

int sf_version_number(void) { return SF_VERSION_NUMBER; }
