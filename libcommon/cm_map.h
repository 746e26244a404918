/*  cm_map.h - a hash map from fixed-size byte keys (8 or 16 bytes: a
    correlation id, a UUID) to pointers.  Open addressing with linear
    probing; grows at 70 % load; deletions leave tombstones that a rebuild
    clears.  Keys are copied into the map; values are not owned.

    Not thread-safe (one map per event loop, like everything else here).
*/
#ifndef CM_MAP_H
#define CM_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cm_map cm_map_t;

//  A map for keys of key_size bytes (1..16).  NULL when out of memory.
cm_map_t *cm_map_new (size_t key_size);
//  Frees the map (not the values); sets *self_p to NULL.
void cm_map_destroy (cm_map_t **self_p);

//  Insert or replace.  Returns 0 or CM_E_NOMEM.
int cm_map_put (cm_map_t *self, const void *key, void *value);
//  The value for key, or NULL.
void *cm_map_get (const cm_map_t *self, const void *key);
//  Remove and return the value, or NULL if absent.
void *cm_map_remove (cm_map_t *self, const void *key);
//  Entries in the map.
size_t cm_map_size (const cm_map_t *self);

//  Iterate: start with *pos = 0; returns false at the end.  The map must
//  not change during the walk, except by cm_map_remove of the current key.
bool cm_map_next (const cm_map_t *self, size_t *pos, const void **key, void **value);

//  Convenience for u64 keys (correlation ids).
int cm_map_put_u64 (cm_map_t *self, uint64_t key, void *value);
void *cm_map_get_u64 (const cm_map_t *self, uint64_t key);
void *cm_map_remove_u64 (cm_map_t *self, uint64_t key);

#endif
