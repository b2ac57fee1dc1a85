/* tests/atlas/atlas_test.h — what the atlas unit tests share: CHECK (counts failures), the Dice
 * of one label, and the world position (mm) of a voxel for drawing synthetic phantoms. Include
 * after pipeline/atlas/atlas.h. */
#ifndef SEGNODE_TESTS_ATLAS_TEST_H
#define SEGNODE_TESTS_ATLAS_TEST_H

#include <stdint.h>
#include <stdio.h>

static int fails;
#define CHECK(c, ...) do { if (!(c)) { printf("FAIL: " __VA_ARGS__); printf("\n"); fails++; } } while (0)

static inline double test_dice(const uint8_t *a, const uint8_t *b, size_t n, int l)
{
    size_t x = 0, y = 0, xy = 0;
    for (size_t i = 0; i < n; i++) x += a[i] == l, y += b[i] == l, xy += a[i] == l && b[i] == l;
    return x + y ? 2.0 * xy / (double)(x + y) : 1.0;
}

/* World point of voxel (i, j, k) with w from atlas_grid_to_world. */
static inline void test_world(const double w[12], int i, int j, int k, double p[3])
{
    for (int r = 0; r < 3; r++) p[r] = w[r * 4] * i + w[r * 4 + 1] * j + w[r * 4 + 2] * k + w[r * 4 + 3];
}

#endif
