/*  test_cm_map.c - the hash map against a plain array model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm_id.h"
#include "cm_map.h"

static void test_put_get_remove (void **state)
{
    cm_map_t *map = cm_map_new (16);
    cm_uuid_t ids[5000];
    for (int i = 0; i < 5000; i++) {
        cm_uuid7 (&ids[i]);
        assert_int_equal (cm_map_put (map, ids[i].b, &ids[i]), 0);
    }
    assert_int_equal (cm_map_size (map), 5000);
    for (int i = 0; i < 5000; i++) assert_ptr_equal (cm_map_get (map, ids[i].b), &ids[i]);
    //  Replace keeps the size.
    assert_int_equal (cm_map_put (map, ids[7].b, &ids[8]), 0);
    assert_ptr_equal (cm_map_get (map, ids[7].b), &ids[8]);
    assert_int_equal (cm_map_size (map), 5000);
    //  Remove every other one.
    for (int i = 0; i < 5000; i += 2) assert_non_null (cm_map_remove (map, ids[i].b));
    assert_null (cm_map_remove (map, ids[0].b));
    assert_int_equal (cm_map_size (map), 2500);
    for (int i = 0; i < 5000; i++) {
        if (i % 2)
            assert_non_null (cm_map_get (map, ids[i].b));
        else
            assert_null (cm_map_get (map, ids[i].b));
    }
    //  Iteration sees exactly the live entries.
    size_t pos = 0, seen = 0;
    const void *key;
    void *value;
    while (cm_map_next (map, &pos, &key, &value)) seen++;
    assert_int_equal (seen, 2500);
    cm_map_destroy (&map);
    assert_null (map);
}

static void test_churn_with_tombstones (void **state)
{
    //  Insert and remove many distinct keys through a small live set: the
    //  table must sweep tombstones instead of filling up or growing.
    cm_map_t *map = cm_map_new (8);
    int marker = 1;
    for (uint64_t k = 1; k <= 200000; k++) {
        assert_int_equal (cm_map_put_u64 (map, k, &marker), 0);
        if (k > 10) assert_ptr_equal (cm_map_remove_u64 (map, k - 10), &marker);
    }
    assert_int_equal (cm_map_size (map), 10);
    for (uint64_t k = 199991; k <= 200000; k++) assert_non_null (cm_map_get_u64 (map, k));
    assert_null (cm_map_get_u64 (map, 5));
    cm_map_destroy (&map);
}

static void test_bad_arguments (void **state)
{
    assert_null (cm_map_new (0));
    assert_null (cm_map_new (17));
    cm_map_t *map = cm_map_new (8);
    assert_int_not_equal (cm_map_put_u64 (map, 1, NULL), 0); //  NULL means absent
    cm_map_destroy (&map);
    cm_map_destroy (&map); //  idempotent
}

int main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_put_get_remove),
        cmocka_unit_test (test_churn_with_tombstones),
        cmocka_unit_test (test_bad_arguments),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
