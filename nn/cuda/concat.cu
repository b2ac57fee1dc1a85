/* nn/cuda/concat.cu — each input is one cudaMemcpy2DAsync: `outer` rows of its block into the
 * output's rows at its offset. Inputs must share the output's dtype. */
#include "nn/cuda/concat.cuh"

int nn__cuda_concat(nn_cuda *b, nn_node *n, char *err, size_t errlen)
{
    int nd = n->out->ndim, ax = n->op.axis < 0 ? n->op.axis + nd : n->op.axis;
    size_t es = nn__dtype_size(n->out->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++) outer *= n->out->shape[d];
    for (int d = ax + 1; d < nd; d++) inner *= n->out->shape[d];
    size_t orow = (size_t)(n->out->shape[ax] * inner) * es, off = 0;
    for (int k = 0; k < n->n_in; k++) {
        if (n->in[k]->dtype != n->out->dtype)
            return sn_errf(err, errlen, SN_EUNSUPPORTED, "concat: mixed dtypes");
        size_t row = (size_t)(n->in[k]->shape[ax] * inner) * es;
        CUDA_TRY(cudaMemcpy2DAsync((char *)n->out->data + off, orow, n->in[k]->data, row, row,
                                   (size_t)outer, cudaMemcpyDeviceToDevice, b->stream),
                 "concat");
        off += row;
    }
    return 0;
}
