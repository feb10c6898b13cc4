// All Python bindings of pyfastgrad._core live here; the math lives in the headers beside it.
// Conventions: float64 overloads are registered first, then float32, with noconvert() and
// c_style arrays so nothing is silently cast or copied; shapes are checked before any memory
// is touched; long loops release the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "blas.hpp"
#include "common.hpp"

namespace py = pybind11;

// ---- section: shared helpers -------------------------------------------------------------

// ---- section: numerical gradient (numgrad.hpp) -------------------------------------------

// ---- section: nets, losses, optimizers, training (mlp.hpp, losses.hpp, optim.hpp) ---------

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyfastgrad C++ kernels (pybind11, OpenBLAS, OpenMP)";

    m.def("blas_config", []() { return std::string(pfg::blas_config()); },
          "OpenBLAS build configuration string.");
    m.def("blas_num_threads", &pfg::blas_num_threads, "Threads OpenBLAS uses.");
    m.def("blas_set_num_threads", &pfg::blas_set_num_threads, py::arg("n"),
          "Set the number of OpenBLAS threads.");
    m.def("openmp_max_threads", []() {
#ifdef _OPENMP
        return omp_get_max_threads();
#else
        return 1;
#endif
    }, "OpenMP threads available to the kernels (1 when built without OpenMP).");

    // ---- register: numerical gradient ----

    // ---- register: nets, losses, optimizers, training ----
}
