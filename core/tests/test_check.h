/* test_check.h -- the C test programs' one assertion: CHECK(cond, printf-format, ...)
 * counts the check, and on failure counts it, prints file:line and the message, and goes
 * on (a program reports every failure, then exits non-zero through its own main). */
#ifndef SF_TEST_CHECK_H
#define SF_TEST_CHECK_H

#include <stdio.h>

static int failures = 0, checks = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        checks++;                                          \
        if (!(cond)) {                                     \
            failures++;                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
            printf(__VA_ARGS__);                           \
            printf("\n");                                  \
        }                                                  \
    } while (0)

#endif /* SF_TEST_CHECK_H */
