/* tests/atlas/atlas_test.h — what the atlas unit tests share: CHECK (counts failures), the Dice
 * of one label, the world position (mm) of a voxel, and the synthetic phantom of atlas_unit and
 * atlas_segment_probs (test_make). Include after pipeline/atlas/atlas.h. */
#ifndef SEGNODE_TESTS_ATLAS_TEST_H
#define SEGNODE_TESTS_ATLAS_TEST_H

#include <stddef.h>
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

/* Body ellipsoid (label 1) with two organs (2: a sphere, 3: a small ellipsoid) at world offset
 * `shift` (mm), scale `s`; intensities per label from val[]. */
static inline void test_make(const atlas_grid *g, const double shift[3], double s, const float val[4], float *img, uint8_t *lab)
{
    double w[12];
    atlas_grid_to_world(g, w);
    for (int k = 0; k < g->nz; k++)
        for (int j = 0; j < g->ny; j++)
            for (int i = 0; i < g->nx; i++) {
                double p[3];
                test_world(w, i, j, k, p);
                for (int r = 0; r < 3; r++) p[r] = (p[r] - shift[r]) / s;
                int l = 0;
                if (p[0] * p[0] / 3600 + p[1] * p[1] / 2500 + p[2] * p[2] / 3600 < 1) l = 1;
                if ((p[0] - 20) * (p[0] - 20) + p[1] * p[1] + (p[2] - 10) * (p[2] - 10) < 400) l = 2;
                if ((p[0] + 25) * (p[0] + 25) / 100 + (p[1] - 10) * (p[1] - 10) / 225 + p[2] * p[2] / 225 < 1) l = 3;
                size_t q = i + (size_t)g->nx * (j + (size_t)g->ny * k);
                img[q] = val[l] + 0.02f * (float)((i * 7 + j * 13 + k * 5) % 11);
                if (lab) lab[q] = (uint8_t)l;
            }
}

#endif
