/* The N-1 mix of callbridge.media.mixer: one tick's frames in, every party's mix out.
 *
 * mix_minus(frames, samples) takes a sequence of equally long int16 frames (bytes-like, the
 * machine's byte order, `samples` samples each) and returns (mixes, total): mixes[i] is the sum
 * of every frame but frames[i], total the sum of all of them, each saturated to int16 and a new
 * bytes object. The sum is kept in int32, so no intermediate step wraps. For three parties of
 * 160 samples this is about a microsecond, against about twenty for the numpy twin, whose cost
 * is the calls, not the arithmetic.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_SAMPLES 5760 /* 120 ms at 48 kHz: larger frames are refused */

static inline int16_t saturate(int32_t value)
{
    if (value > 32767)
        return 32767;
    if (value < -32768)
        return -32768;
    return (int16_t)value;
}

/* A sample of a frame whose buffer may not be aligned (a memoryview slice). */
static inline int32_t sample_at(const char *frame, Py_ssize_t index)
{
    int16_t value;
    memcpy(&value, frame + 2 * index, sizeof value);
    return value;
}

static PyObject *mix_minus(PyObject *module, PyObject *args)
{
    PyObject *sequence;
    Py_ssize_t samples;
    (void)module;
    if (!PyArg_ParseTuple(args, "On:mix_minus", &sequence, &samples))
        return NULL;
    if (samples < 0 || samples > MAX_SAMPLES) {
        PyErr_Format(PyExc_ValueError, "samples must be between 0 and %d", MAX_SAMPLES);
        return NULL;
    }
    PyObject *fast = PySequence_Fast(sequence, "frames must be a sequence of bytes-like objects");
    if (fast == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    Py_buffer *views = PyMem_Calloc(count ? (size_t)count : 1, sizeof(Py_buffer));
    int32_t *total = PyMem_Calloc(samples ? (size_t)samples : 1, sizeof(int32_t));
    PyObject *mixes = NULL, *total_bytes = NULL, *result = NULL;
    Py_ssize_t taken = 0;
    if (views == NULL || total == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; taken < count; taken++) {
        if (PyObject_GetBuffer(items[taken], &views[taken], PyBUF_SIMPLE) < 0)
            goto done;
        if (views[taken].len != samples * 2) {
            PyErr_Format(PyExc_ValueError, "frame %zd has %zd bytes, expected %zd", taken,
                         views[taken].len, samples * 2);
            taken++;
            goto done;
        }
        const char *frame = views[taken].buf;
        for (Py_ssize_t i = 0; i < samples; i++)
            total[i] += sample_at(frame, i);
    }
    mixes = PyList_New(count);
    if (mixes == NULL)
        goto done;
    for (Py_ssize_t row = 0; row < count; row++) {
        PyObject *mix = PyBytes_FromStringAndSize(NULL, samples * 2);
        if (mix == NULL)
            goto done;
        int16_t *out = (int16_t *)PyBytes_AS_STRING(mix);
        const char *own = views[row].buf;
        for (Py_ssize_t i = 0; i < samples; i++)
            out[i] = saturate(total[i] - sample_at(own, i));
        PyList_SET_ITEM(mixes, row, mix);
    }
    total_bytes = PyBytes_FromStringAndSize(NULL, samples * 2);
    if (total_bytes == NULL)
        goto done;
    int16_t *out = (int16_t *)PyBytes_AS_STRING(total_bytes);
    for (Py_ssize_t i = 0; i < samples; i++)
        out[i] = saturate(total[i]);
    result = PyTuple_Pack(2, mixes, total_bytes);
done:
    for (Py_ssize_t index = 0; index < taken; index++)
        PyBuffer_Release(&views[index]);
    PyMem_Free(views);
    PyMem_Free(total);
    Py_XDECREF(mixes);
    Py_XDECREF(total_bytes);
    Py_DECREF(fast);
    return result;
}

static PyMethodDef methods[] = {
    {"mix_minus", mix_minus, METH_VARARGS,
     "mix_minus(frames, samples) -> (mixes, total): each frame's N-1 mix and the sum of all, "
     "saturated int16 bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mix", "The N-1 mix of one tick, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mix(void) { return PyModule_Create(&module); }
