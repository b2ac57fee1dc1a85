/* tools/segnode/atlas.h — the atlas subcommand and the atlas method of `segnode segment`
 * (tools/segnode/atlas.c). */
#ifndef SEGNODE_TOOLS_ATLAS_H
#define SEGNODE_TOOLS_ATLAS_H
#include <stddef.h>
#include <stdint.h>
#include "pipeline/atlas/method_atlas.h"
#include "pipeline/volume.h"

/* `segnode atlas import|list`; returns a CLI exit code. */
int segnode_atlas(int argc, char **argv);

/* Split the comma-separated atlas names into nm[PIPELINE_ATLAS_MAX] (pointers into list, which
 * holds a copy of names). Returns how many, or -1 with a message on stderr when there are more
 * than PIPELINE_ATLAS_MAX (the method never fuses a part of what was asked). */
int segnode_atlas_names(const char *names, char *list, size_t listlen, const char **nm);

/* Segment volume v with the comma-separated library atlases `names`, fusion "majority", "local"
 * or "jlf" (NULL = the node's default, pipeline_atlas_opts_default: local), on `device` "auto"
 * (NULL: the first CUDA device when there is one, else or when it fails the CPU), "cpu" or
 * "cuda" (device 0, no fallback), into out[nx*ny*nz] label values. select_k: as a route's
 * select_k (pipeline_atlas_opts.select_k; 0 = every atlas, PIPELINE_SELECT_K_AUTO); refine: as a route's refine (1
 * intensity, 0 none). `device` is not checked here: `segment` refuses other values before it
 * reads the series. Returns a CLI exit code. */
int segnode_atlas_segment(const pipeline_volume *v, const char *names, const char *fusion, int select_k,
                          int refine, const char *device, uint16_t *out);
#endif
