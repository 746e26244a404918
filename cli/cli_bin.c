/*  cli_bin.c - the other Corral binaries (cli_bin.h). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_bin.h"

int cli_bin_dir (char *out, size_t outlen)
{
    char me[PATH_MAX];
    ssize_t n = readlink ("/proc/self/exe", me, sizeof me - 1);
    if (n <= 0) return -1;
    me[n] = 0;
    char *slash = strrchr (me, '/');
    if (!slash) return -1;
    *slash = 0;
    int w = snprintf (out, outlen, "%s", me);
    return w < 0 || (size_t)w >= outlen ? -1 : 0;
}

static int s_try (const char *cand, char *out, size_t outlen)
{
    char real[PATH_MAX];
    if (access (cand, X_OK) || !realpath (cand, real)) return -1;
    int w = snprintf (out, outlen, "%s", real);
    return w < 0 || (size_t)w >= outlen ? -1 : 0;
}

int cli_bin_find (const char *bin, const char *tree, char *out, size_t outlen)
{
    char dir[PATH_MAX - 256], cand[PATH_MAX];
    if (cli_bin_dir (dir, sizeof dir)) return -1;
    int w = snprintf (cand, sizeof cand, "%s/%s", dir, bin);
    if (w > 0 && (size_t)w < sizeof cand && s_try (cand, out, outlen) == 0) return 0;
    w = snprintf (cand, sizeof cand, "%s/../%s", dir, tree);
    if (w > 0 && (size_t)w < sizeof cand && s_try (cand, out, outlen) == 0) return 0;
    return -1;
}
