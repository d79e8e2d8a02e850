/* read_file.h -- the kernel-math tests' one file reader. */
#ifndef KERNEL_MATH_READ_FILE_H
#define KERNEL_MATH_READ_FILE_H

#include <stdio.h>
#include <stdlib.h>

/* A malloc'd, NUL-terminated copy of a file, or NULL (with a message). */
static char *kmt_read_file(const char *path, size_t *length)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "FAIL: cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "FAIL: cannot read %s\n", path);
        free(text);
        fclose(f);
        return NULL;
    }
    fclose(f);
    text[size] = 0;
    if (length) *length = (size_t)size;
    return text;
}

#endif
