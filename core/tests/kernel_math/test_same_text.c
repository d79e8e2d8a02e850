/* test_same_text.c -- the kernel source the GPU platforms compile is the
 * mathematics the C core compiles: sf_math_kernel_source must equal, byte
 * for byte, the headers of core/src/math as they are on disk, concatenated
 * in the documented order, and the core's umbrella header must include the
 * same headers in the same order.  It also checks the dialect rule the
 * compilers cannot: every non-integer literal of the code is wrapped in
 * SFM_C(...), so that it takes the precision of real (a bare 0.5 is a
 * double, which a single-precision kernel would silently compute in).
 *
 *   test_kernel_math_same_text <math dir> <umbrella header> <name>...
 *
 * The names are SMOOTHFLOW_KERNEL_MATH_HEADERS of core/CMakeLists.txt. */
#include "read_file.h"
#include "sf_math_kernel_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Floating literals outside SFM_C(...) in the code (comments skipped) of one
 * file; reports each with its line and returns their count. */
static int bare_literals(const char *name, const char *text)
{
    int found = 0, line = 1;
    for (const char *p = text; *p; p++) {
        if (*p == '\n') line++;
        if (p[0] == '/' && p[1] == '*') {
            for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
                if (*p == '\n') line++;
            if (!*p) break;
            p++;
            continue;
        }
        if (p[0] == '/' && p[1] == '/') {
            while (p[1] && p[1] != '\n') p++;
            continue;
        }
        const int starts = (*p >= '0' && *p <= '9') || (*p == '.' && p[1] >= '0' && p[1] <= '9');
        if (!starts || (p > text && ident_char(p[-1]))) continue;
        const char *end = p;
        int floating = 0, hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
        while (ident_char(*end) || *end == '.' ||
               ((*end == '+' || *end == '-') &&
                (hex ? (end[-1] == 'p' || end[-1] == 'P') : (end[-1] == 'e' || end[-1] == 'E')))) {
            if (*end == '.' || (hex ? (*end == 'p' || *end == 'P') : (*end == 'e' || *end == 'E'))) floating = 1;
            end++;
        }
        if (floating) {
            const char *q = p;
            while (q > text && (q[-1] == ' ' || q[-1] == '\t')) q--;
            if (q - text < 6 || strncmp(q - 6, "SFM_C(", 6) != 0) {
                fprintf(stderr, "FAIL: %s:%d: the literal %.*s is not wrapped in SFM_C(...)\n", name, line,
                        (int)(end - p), p);
                found++;
            }
        }
        p = end - 1;
    }
    return found;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s <math dir> <umbrella header> <name>...\n", argv[0]);
        return 2;
    }
    int failures = 0;

    /* 1. The generated string is the files, in order. */
    size_t offset = 0;
    for (int i = 3; i < argc; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], argv[i]);
        size_t length;
        char *text = kmt_read_file(path, &length);
        if (!text) {
            fprintf(stderr, "FAIL: cannot read %s\n", path);
            return 1;
        }
        if (offset + length > sf_math_kernel_source_length) {
            fprintf(stderr, "FAIL: the kernel source (%zu bytes) ends inside %s (bytes %zu..%zu)\n",
                    sf_math_kernel_source_length, argv[i], offset, offset + length);
            failures++;
        } else if (memcmp(sf_math_kernel_source + offset, text, length) != 0) {
            size_t k = 0;
            while (sf_math_kernel_source[offset + k] == text[k]) k++;
            fprintf(stderr, "FAIL: the kernel source differs from %s at byte %zu of the file (%zu of the source): "
                            "rebuild, or the encoding changes the text\n", path, k, offset + k);
            failures++;
        } else {
            printf("%-22s %6zu bytes at %6zu: same\n", argv[i], length, offset);
        }
        failures += bare_literals(path, text);
        free(text);
        offset += length;
    }
    if (offset != sf_math_kernel_source_length) {
        fprintf(stderr, "FAIL: the kernel source has %zu bytes, the headers %zu\n", sf_math_kernel_source_length,
                offset);
        failures++;
    }
    if (strlen(sf_math_kernel_source) != sf_math_kernel_source_length) {
        fprintf(stderr, "FAIL: the kernel source holds a NUL byte or is not terminated\n");
        failures++;
    }

    /* 2. The host umbrella includes the same headers in the same order. */
    size_t length;
    char *umbrella = kmt_read_file(argv[2], &length);
    if (!umbrella) {
        fprintf(stderr, "FAIL: cannot read %s\n", argv[2]);
        return 1;
    }
    int next = 3;
    for (const char *p = strstr(umbrella, "#include \"../"); p; p = strstr(p + 1, "#include \"../")) {
        const char *name = p + strlen("#include \"../");
        const char *end = strchr(name, '"');
        if (!end) break;
        const size_t n = (size_t)(end - name);
        if (next >= argc || strlen(argv[next]) != n || strncmp(name, argv[next], n) != 0) {
            fprintf(stderr, "FAIL: %s includes %.*s where the kernel source has %s\n", argv[2], (int)n, name,
                    next < argc ? argv[next] : "nothing more");
            failures++;
            break;
        }
        next++;
    }
    if (!failures && next != argc) {
        fprintf(stderr, "FAIL: %s does not include %s (in the kernel source)\n", argv[2], argv[next]);
        failures++;
    }
    free(umbrella);
    if (failures) return 1;
    printf("PASS: the kernel source is the %d headers, byte for byte, in the host's order; every non-integer "
           "literal follows the precision\n", argc - 3);
    return 0;
}
