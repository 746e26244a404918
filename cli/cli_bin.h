/*  cli_bin.h - the other Corral binaries, found from this one.

    Two layouts are supported, tried in this order:
      installed   every binary side by side: <dir>/corral, <dir>/corral-store ...
      build tree  the CMake build folder: <build>/cli/corral,
                  <build>/services/store/corral-store, <build>/gateway/corral-keys ...
    "This one" is /proc/self/exe, so a symlink to corral (say in
    ~/.local/bin) still finds the binaries beside its target.
*/
#ifndef CLI_BIN_H
#define CLI_BIN_H

#include <stddef.h>

//  The folder this binary is in, into out (outlen bytes).  Returns 0 or -1.
int cli_bin_dir (char *out, size_t outlen);

//  The absolute path of a binary named bin ("corral-keys"), installed
//  beside this one or at tree ("gateway/corral-keys") relative to the
//  build folder, into out.  Returns 0, or -1 when neither is executable.
int cli_bin_find (const char *bin, const char *tree, char *out, size_t outlen);

#endif
