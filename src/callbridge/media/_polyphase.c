/* The inner loop of callbridge.media.resample: a polyphase FIR.
 *
 * Python designs the filter and keeps the stream's state; this function only computes `count`
 * int16 output samples from a float32 buffer that holds the filter's history followed by the
 * new input. It
 * allocates nothing and releases the GIL while it works, so one 20 ms frame costs a few
 * microseconds instead of the tens that a call into libswresample through PyAV costs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

/* y = sum over k of weights[k] * x[k]. Built with associative float math (setup.py), so the
 * compiler vectorizes this reduction. */
static inline float dot(const float *restrict weights, const float *restrict x, Py_ssize_t taps)
{
    float sum = 0.0f;
    for (Py_ssize_t k = 0; k < taps; k++)
        sum += weights[k] * x[k];
    return sum;
}

static inline int16_t to_sample(float value)
{
    long rounded = lrintf(value);
    if (rounded > 32767)
        return 32767;
    if (rounded < -32768)
        return -32768;
    return (int16_t)rounded;
}

/* Cloned for AVX2 where the CPU has it (glibc picks the clone once, at load); plain x86-64
 * otherwise. FMA is left out on purpose: it lengthens the single accumulator's dependency chain
 * and measured slower here. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("avx2", "default")))
#endif
static void filter(const float *weights, Py_ssize_t up, Py_ssize_t down, Py_ssize_t taps,
                   const float *samples, Py_ssize_t *phase_io, Py_ssize_t *start_io,
                   int16_t *out, Py_ssize_t count)
{
    Py_ssize_t phase = *phase_io, start = *start_io;
    for (Py_ssize_t j = 0; j < count; j++) {
        out[j] = to_sample(dot(weights + phase * taps, samples + start, taps));
        phase += down;
        start += phase / up;
        phase %= up;
    }
    *phase_io = phase;
    *start_io = start;
}

PyDoc_STRVAR(run_doc,
"run(phases, up, down, taps, buffer, phase, start, output) -> (phase, start)\n\n"
"Fill `output` (writable int16) with len(output) samples. `phases` holds `up` rows of `taps`\n"
"float32 weights, each row reversed so that it multiplies buffer[start:start + taps] in order;\n"
"`buffer` is float32 history plus new input. Each output advances the phase by `down`; a phase\n"
"reaching `up` moves `start` on by one input sample. Returns the phase and start of the next\n"
"output. ValueError if the buffer would be read past its end.");

static PyObject *run(PyObject *module, PyObject *args)
{
    Py_buffer phases, buffer, output;
    Py_ssize_t up, down, taps, phase, start;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*nnny*nnw*", &phases, &up, &down, &taps, &buffer, &phase,
                          &start, &output))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t count = output.len / (Py_ssize_t)sizeof(int16_t);
    Py_ssize_t available = buffer.len / (Py_ssize_t)sizeof(float);
    if (up < 1 || down < 1 || taps < 1 || phase < 0 || phase >= up || start < 0
        || phases.len != up * taps * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "inconsistent filter geometry");
        goto done;
    }
    if (count > 0) {
        /* The last output's window starts at start + (phase + (count - 1) * down) / up. */
        Py_ssize_t last = start + (phase + (count - 1) * down) / up;
        if (last + taps > available) {
            PyErr_SetString(PyExc_ValueError, "the buffer holds too few samples");
            goto done;
        }
    }
    const float *weights = (const float *)phases.buf;
    const float *samples = (const float *)buffer.buf;
    int16_t *out = (int16_t *)output.buf;
    Py_BEGIN_ALLOW_THREADS
    filter(weights, up, down, taps, samples, &phase, &start, out, count);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("nn", phase, start);
done:
    PyBuffer_Release(&phases);
    PyBuffer_Release(&buffer);
    PyBuffer_Release(&output);
    return result;
}

static PyMethodDef methods[] = {
    {"run", run, METH_VARARGS, run_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef polyphase_module = {
    PyModuleDef_HEAD_INIT,
    "_polyphase",
    "Native inner loop of the polyphase resampler (callbridge.media.resample).",
    -1,
    methods,
};

PyMODINIT_FUNC PyInit__polyphase(void)
{
    return PyModule_Create(&polyphase_module);
}
