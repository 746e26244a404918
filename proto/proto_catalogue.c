/*  proto_catalogue.c - descriptor tables generated from proto_catalogue.def.

    The codec, the dispatch tables of each service and the documentation
    generator all read these tables; nothing here is written by hand per
    message.
*/
#include <stddef.h>
#include <string.h>

#include "proto.h"

/*  Field tables: proto_fields_<record>[]  */
#define FIELD_F(S, n, t, r, doc)                                              \
    {#n,  sizeof (#n) - 1, PROTO_T_##t, PROTO_REQ_##r, offsetof (S, n), NULL, \
     doc, PROTO_FIXED_##t},
#define FIELD_R(S, n, t, r, rec, doc) \
    {#n,                              \
     sizeof (#n) - 1,                 \
     PROTO_T_##t,                     \
     PROTO_REQ_##r,                   \
     offsetof (S, n),                 \
     &proto_rec_##rec,                \
     doc,                             \
     false},
#define PROTO_REQ_REQ true
#define PROTO_REQ_OPT false

#define GEN_FIELDS(name, doc)                                                      \
    static const proto_field_desc_t proto_fields_##name[] = {PROTO_FIELDS_##name ( \
        FIELD_F, FIELD_R, proto_##name##_t){NULL, 0, 0, 0, 0, NULL, NULL, false}};
PROTO_RECORDS (GEN_FIELDS)
#undef GEN_FIELDS

#define GEN_REC(name, doc)                                     \
    const proto_rec_desc_t proto_rec_##name = {                \
        #name, sizeof (proto_##name##_t), proto_fields_##name, \
        sizeof (proto_fields_##name) / sizeof (proto_fields_##name[0]) - 1, doc};
PROTO_RECORDS (GEN_REC)
#undef GEN_REC

static const proto_rec_desc_t *const s_recs[] = {
#define GEN_REC_PTR(name, doc) &proto_rec_##name,
    PROTO_RECORDS (GEN_REC_PTR)
#undef GEN_REC_PTR
};

/*  One descriptor object per message, then two views of them: catalogue
    order (for docs and iteration) and a table indexed by type id.  Both
    are built by the compiler.  */
#define GEN_MSG(sym, id, wire, fam, body, dir, doc) \
    static const proto_msg_desc_t s_msg_##sym = {   \
        PROTO_##sym, wire, #sym, PROTO_FAMILY_##fam, &proto_rec_##body, dir, doc};
PROTO_MESSAGES (GEN_MSG)
#undef GEN_MSG

static const proto_msg_desc_t *const s_msgs[] = {
#define GEN_PTR(sym, id, wire, fam, body, dir, doc) &s_msg_##sym,
    PROTO_MESSAGES (GEN_PTR)
#undef GEN_PTR
};

#define GEN_CHECK(sym, id, wire, fam, body, dir, doc) \
    _Static_assert(id > 0 && id < PROTO_MAX_TYPE, "type id out of range: " #sym);
PROTO_MESSAGES (GEN_CHECK)
#undef GEN_CHECK

//  A duplicate id is a compile error here ("initialized field overwritten"
//  is only a warning, so the unit test also checks uniqueness).
static const proto_msg_desc_t *const s_by_id[PROTO_MAX_TYPE] = {
#define GEN_BY_ID(sym, id, wire, fam, body, dir, doc) [id] = &s_msg_##sym,
    PROTO_MESSAGES (GEN_BY_ID)
#undef GEN_BY_ID
};

#define MSG_COUNT (sizeof (s_msgs) / sizeof (s_msgs[0]))

const proto_msg_desc_t *proto_msg_desc (uint32_t type)
{
    return type < PROTO_MAX_TYPE ? s_by_id[type] : NULL;
}

const proto_msg_desc_t *const *proto_msg_descs (size_t *count)
{
    *count = MSG_COUNT;
    return s_msgs;
}

const proto_rec_desc_t *const *proto_rec_descs (size_t *count)
{
    *count = sizeof (s_recs) / sizeof (s_recs[0]);
    return s_recs;
}

const char *proto_type_name (uint32_t type)
{
    const proto_msg_desc_t *d = proto_msg_desc (type);
    return d ? d->name : "unknown";
}

proto_type_t proto_type_by_name (const char *name)
{
    for (size_t i = 0; i < MSG_COUNT; i++)
        if (strcmp (s_msgs[i]->name, name) == 0) return s_msgs[i]->type;
    return PROTO_NONE;
}

const char *proto_family_name (proto_family_t family)
{
    static const char *const names[] = {"reply",  "store",   "client",
                                        "worker", "monitor", "event"};
    return (unsigned)family < sizeof (names) / sizeof (names[0]) ? names[family] : "?";
}
