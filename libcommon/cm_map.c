/*  cm_map.c - open-addressing hash map (see cm_map.h).

    Slot states: empty (value NULL, not a tombstone), live (value != NULL),
    tombstone (value NULL, flag set).  The hash is FNV-1a over the key bytes
    finished with a 64-bit mixer, so structured keys (UUIDv7 timestamps,
    counters) spread well.
*/
#include <stdlib.h>
#include <string.h>

#include "cm_error.h"
#include "cm_map.h"

typedef struct {
    uint8_t key[16];
    void *value;
    bool tomb;
} slot_t;

struct cm_map {
    size_t key_size;
    size_t cap; //  power of two
    size_t live;
    size_t used; //  live + tombstones
    slot_t *slots;
};

static uint64_t hash (const uint8_t *key, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ key[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

cm_map_t *cm_map_new (size_t key_size)
{
    if (key_size == 0 || key_size > 16) return NULL;
    cm_map_t *self = calloc (1, sizeof *self);
    if (!self) return NULL;
    self->key_size = key_size;
    self->cap = 16;
    self->slots = calloc (self->cap, sizeof *self->slots);
    if (!self->slots) {
        free (self);
        return NULL;
    }
    return self;
}

void cm_map_destroy (cm_map_t **self_p)
{
    if (!*self_p) return;
    free ((*self_p)->slots);
    free (*self_p);
    *self_p = NULL;
}

//  Slot holding key, or NULL.
static slot_t *find (const cm_map_t *self, const void *key)
{
    size_t mask = self->cap - 1;
    for (size_t i = hash (key, self->key_size) & mask;; i = (i + 1) & mask) {
        slot_t *s = &self->slots[i];
        if (!s->value && !s->tomb) return NULL;
        if (s->value && memcmp (s->key, key, self->key_size) == 0) return s;
    }
}

static int rebuild (cm_map_t *self, size_t cap)
{
    slot_t *old = self->slots;
    size_t old_cap = self->cap;
    slot_t *slots = calloc (cap, sizeof *slots);
    if (!slots) return CM_E_NOMEM;
    self->slots = slots;
    self->cap = cap;
    self->used = self->live;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].value) continue;
        for (size_t j = hash (old[i].key, self->key_size) & (cap - 1);;
             j = (j + 1) & (cap - 1))
            if (!slots[j].value) {
                slots[j] = old[i];
                break;
            }
    }
    free (old);
    return 0;
}

int cm_map_put (cm_map_t *self, const void *key, void *value)
{
    if (!value) return CM_E_INVALID;
    slot_t *s = find (self, key);
    if (s) {
        s->value = value;
        return 0;
    }
    if ((self->used + 1) * 10 > self->cap * 7) {
        //  Grow when live entries fill it; otherwise just sweep tombstones.
        size_t cap = (self->live + 1) * 10 > self->cap * 5 ? self->cap * 2 : self->cap;
        if (rebuild (self, cap)) return CM_E_NOMEM;
    }
    size_t mask = self->cap - 1;
    for (size_t i = hash (key, self->key_size) & mask;; i = (i + 1) & mask) {
        s = &self->slots[i];
        if (!s->value) {
            if (!s->tomb) self->used++;
            memcpy (s->key, key, self->key_size);
            s->value = value;
            s->tomb = false;
            self->live++;
            return 0;
        }
    }
}

void *cm_map_get (const cm_map_t *self, const void *key)
{
    slot_t *s = find (self, key);
    return s ? s->value : NULL;
}

void *cm_map_remove (cm_map_t *self, const void *key)
{
    slot_t *s = find (self, key);
    if (!s) return NULL;
    void *value = s->value;
    s->value = NULL;
    s->tomb = true;
    self->live--;
    return value;
}

size_t cm_map_size (const cm_map_t *self)
{
    return self->live;
}

bool cm_map_next (const cm_map_t *self, size_t *pos, const void **key, void **value)
{
    while (*pos < self->cap) {
        slot_t *s = &self->slots[(*pos)++];
        if (s->value) {
            if (key) *key = s->key;
            if (value) *value = s->value;
            return true;
        }
    }
    return false;
}

int cm_map_put_u64 (cm_map_t *self, uint64_t key, void *value)
{
    return cm_map_put (self, &key, value);
}

void *cm_map_get_u64 (const cm_map_t *self, uint64_t key)
{
    return cm_map_get (self, &key);
}

void *cm_map_remove_u64 (cm_map_t *self, uint64_t key)
{
    return cm_map_remove (self, &key);
}
