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

#include "core/blas.hpp"
#include "core/common.hpp"
#include "kernels/scan.hpp"
#include "mlp/csc.hpp"
#include "mlp/rows.hpp"

namespace py = pybind11;

// ---- section: shared helpers -------------------------------------------------------------

// ---- section: numerical gradient (numgrad.hpp) -------------------------------------------
#include "numgrad/numgrad.hpp"

namespace numgrad_bind {

template <class T>
using CArr = py::array_t<T, py::array::c_style>;

// [lo, hi) of the bytes an array's elements occupy: data() is the first element, which for negative
// strides (a reversed view) is not the lowest address.
inline std::pair<const char*, const char*> extent(const py::array& a) {
    const char* lo = static_cast<const char*>(a.data());
    const char* hi = lo;
    for (py::ssize_t d = 0; d < a.ndim(); ++d) {
        const py::ssize_t span = (a.shape(d) - 1) * a.strides(d);
        (span < 0 ? lo : hi) += span;
    }
    return {lo, hi + a.itemsize()};
}

// Whether two arrays may share memory (their byte ranges intersect; conservative for interleaved
// strides, like numpy's may_share_memory).
inline bool overlaps(const py::array& a, const py::array& b) {
    if (a.size() == 0 || b.size() == 0) return false;
    const auto ea = extent(a), eb = extent(b);
    return ea.first < eb.second && eb.first < ea.second;
}

// The kernels read arrays as T*: an array at an unaligned address (np.frombuffer at an odd offset)
// would be misaligned loads, so it is refused with the fix.
inline void require_aligned(const py::array& a, const char* name) {
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw std::invalid_argument(std::string(name) + " is not aligned to its dtype (e.g. np.frombuffer at an "
                                    "odd offset); pass a copy (np.array(" + name + "))");
}

template <class T>
void mlp_numgrad(const std::vector<std::int64_t>& sizes, const std::string& activation,
                 const std::string& loss, const CArr<T>& theta, const CArr<T>& x, const CArr<T>& t,
                 double weight_decay, double h, CArr<T>& grad) {
    const pfg::Act act = pfg::parse_act(activation);
    const pfg::Loss lo = pfg::parse_loss(loss);
    if (theta.ndim() != 1) throw std::invalid_argument("theta must be 1-D");
    if (grad.ndim() != 1) throw std::invalid_argument("grad must be 1-D");
    if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D (N, n_inputs)");
    if (t.ndim() != 2) throw std::invalid_argument("t must be 2-D (N, n_outputs)");
    pfg::check_mlp_numgrad_shapes(sizes, theta.shape(0), x.shape(0), x.shape(1), t.shape(0), t.shape(1),
                                  grad.shape(0));
    if (!grad.writeable()) throw std::invalid_argument("grad is not writeable");
    require_aligned(theta, "theta");
    require_aligned(x, "x");
    require_aligned(t, "t");
    require_aligned(grad, "grad");
    if (overlaps(grad, theta) || overlaps(grad, x) || overlaps(grad, t))
        throw std::invalid_argument("grad must not share memory with theta, x or t");
    if (!(h != 0.0 && std::isfinite(h))) throw std::invalid_argument("h must be finite and nonzero");
    const T* th = theta.data();
    const T* xp = x.data();
    const T* tp = t.data();
    T* g = grad.mutable_data();
    const std::int64_t N = x.shape(0);
    bool done;
    {
        py::gil_scoped_release nogil;
        // Ctrl-C: the kernel asks every ~50 ms (from the caller's thread, with the GIL taken back)
        done = pfg::mlp_numerical_gradient<T>(sizes, act, lo, th, xp, tp, N, weight_decay, h, g, []() {
            py::gil_scoped_acquire gil;
            return PyErr_CheckSignals() != 0;
        });
    }
    if (!done) throw py::error_already_set();  // the signal handler's exception (KeyboardInterrupt)
}

template <class T>
void mlp_kinks(const std::vector<std::int64_t>& sizes, const std::string& activation, const std::string& loss,
               const CArr<T>& theta, const CArr<T>& x, const CArr<T>& t, double h, CArr<std::int64_t>& plus,
               CArr<std::int64_t>& minus) {
    const pfg::Act act = pfg::parse_act(activation);
    const pfg::Loss lo = pfg::parse_loss(loss);
    if (theta.ndim() != 1 || plus.ndim() != 1 || minus.ndim() != 1)
        throw std::invalid_argument("theta, plus and minus must be 1-D");
    if (x.ndim() != 2) throw std::invalid_argument("x must be 2-D (N, n_inputs)");
    if (t.ndim() != 2) throw std::invalid_argument("t must be 2-D (N, n_outputs)");
    pfg::check_mlp_numgrad_shapes(sizes, theta.shape(0), x.shape(0), x.shape(1), t.shape(0), t.shape(1),
                                  plus.shape(0));
    if (minus.shape(0) != plus.shape(0)) throw std::invalid_argument("minus must have plus's length");
    if (!plus.writeable() || !minus.writeable()) throw std::invalid_argument("plus/minus are not writeable");
    if (overlaps(plus, minus)) throw std::invalid_argument("plus and minus must not share memory");
    require_aligned(theta, "theta");
    require_aligned(x, "x");
    require_aligned(t, "t");
    require_aligned(plus, "plus");
    require_aligned(minus, "minus");
    if (!(h > 0.0 && std::isfinite(h))) throw std::invalid_argument("h must be finite and > 0");
    const T* th = theta.data();
    const T* xp = x.data();
    const T* tp = t.data();
    std::int64_t* pp = plus.mutable_data();
    std::int64_t* mp = minus.mutable_data();
    const std::int64_t N = x.shape(0);
    py::gil_scoped_release nogil;
    pfg::mlp_kink_counts<T>(sizes, act, lo, th, xp, tp, N, h, pp, mp);
}

// f(x) as a double; a clear TypeError when the result is not a real number.
inline double call_f(const py::object& f, const py::array& x) {
    py::object r = f(x);
    try {
        return py::cast<double>(r);
    } catch (const py::cast_error&) {
        throw py::type_error("f must return a real number (float, numpy scalar or 0-d array), got " +
                             std::string(py::str(py::type::of(r))));
    }
}

template <class T>
void callback_numgrad_t(const py::object& f, py::array& x, double h, bool forward, py::array& out) {
    std::vector<std::int64_t> shape(x.ndim()), strides(x.ndim());
    for (py::ssize_t d = 0; d < x.ndim(); ++d) {
        shape[d] = x.shape(d);
        strides[d] = x.strides(d);
    }
    T* o = static_cast<T*>(out.mutable_data());
    pfg::numerical_gradient_strided<T>(static_cast<char*>(x.mutable_data()), shape, strides, h, forward,
                                       [&]() { return call_f(f, x); }, o);
}

// x is taken as py::array (never converted or copied): it is perturbed in place.
inline void callback_numgrad(const py::object& f, py::array x, double h, bool forward, py::array out) {
    if (!PyCallable_Check(f.ptr())) throw py::type_error("f must be callable");
    const bool f64 = x.dtype().is(py::dtype::of<double>());
    const bool f32 = x.dtype().is(py::dtype::of<float>());
    if (!f64 && !f32)
        throw py::type_error("x must be a float64 or float32 array, got dtype " +
                             std::string(py::str(x.dtype())));
    if (!x.writeable()) throw std::invalid_argument("x must be writeable (it is perturbed in place)");
    if (!out.dtype().is(x.dtype()))
        throw py::type_error("out must have x's dtype " + std::string(py::str(x.dtype())) + ", got " +
                             std::string(py::str(out.dtype())));
    bool same = out.ndim() == x.ndim();
    for (py::ssize_t d = 0; same && d < x.ndim(); ++d) same = out.shape(d) == x.shape(d);
    if (!same) throw std::invalid_argument("out must have x's shape");
    if (!(out.flags() & py::array::c_style)) throw std::invalid_argument("out must be C-contiguous");
    require_aligned(out, "out");
    if (!out.writeable()) throw std::invalid_argument("out is not writeable");
    if (overlaps(out, x)) throw std::invalid_argument("out must not share memory with x");
    if (f64) callback_numgrad_t<double>(f, x, h, forward, out);
    else callback_numgrad_t<float>(f, x, h, forward, out);
}

}  // namespace numgrad_bind

// ---- section: nets, losses, optimizers, training (mlp.hpp, losses.hpp, optim.hpp) ---------
#include <mutex>
#include <optional>
#include <array>

#include "kernels/losses.hpp"
#include "mlp/mlp.hpp"
#include "mlp/rows.hpp"
#include "kernels/optim.hpp"

namespace nets_bind {

// A borrowed view of a numpy array that is exactly T, C-contiguous, aligned and native-endian.
// It accepts what py::array_t<T, c_style> with noconvert() accepts (anything else fails the
// overload -> TypeError; nothing is ever cast or copied), but costs ~0.05 us per argument instead
// of ~0.2 us (no PyArray_FromAny round trip): it matters for ~5 us calls with 4-6 arrays.
template <class T>
struct View {
    PyObject* obj = nullptr;
    T* ptr = nullptr;
    int ndim = 0;
    const py::ssize_t* dims = nullptr;
    std::int64_t size = 1;
    bool writeable = false;
    std::int64_t shape(int i) const { return dims[i]; }
};

}  // namespace nets_bind

namespace pybind11 {
namespace detail {
template <class T>
struct type_caster<nets_bind::View<T>> {
    PYBIND11_TYPE_CASTER(nets_bind::View<T>,
                         const_name("numpy.typing.NDArray[") + npy_format_descriptor<T>::name + const_name("]"));
    bool load(handle src, bool /*convert: never*/) {
        if (!npy_api::get().PyArray_Check_(src.ptr())) return false;
        const PyArray_Proxy* a = array_proxy(src.ptr());
        const PyArrayDescr_Proxy* d = array_descriptor_proxy(a->descr);
        int num = d->type_num;
        if (num >= 0 && num <= npy_api::NPY_VOID_) num = normalized_dtype_num[num];
        if (num != dtype::num_of<T>()) return false;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        const char swapped = '<';
#else
        const char swapped = '>';
#endif
        if (d->byteorder == swapped) return false;
        const int need = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_;
        if ((a->flags & need) != need) return false;
        value.obj = src.ptr();
        value.ptr = reinterpret_cast<T*>(a->data);
        value.ndim = a->nd;
        value.dims = a->dimensions;
        value.size = 1;
        for (int i = 0; i < a->nd; ++i) value.size *= a->dimensions[i];
        value.writeable = (a->flags & npy_api::NPY_ARRAY_WRITEABLE_) != 0;
        return true;
    }
    static handle cast(const nets_bind::View<T>& v, return_value_policy, handle) {
        return handle(v.obj).inc_ref();
    }
};
}  // namespace detail
}  // namespace pybind11

namespace nets_bind {

template <class T>
using V = View<T>;

// Below this much work (rows * n_params, or elements) the GIL round trip costs more than it frees.
constexpr std::int64_t kReleaseGilWork = std::int64_t(1) << 16;

template <class T>
std::string shape_of(const V<T>& a) {
    std::string s = "(";
    for (int i = 0; i < a.ndim; ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim == 1 ? ",)" : ")");
}
template <class T>
[[noreturn]] void bad_shape(const char* name, const std::string& want, const V<T>& a) {
    throw std::invalid_argument(std::string(name) + " must have shape " + want + ", got " + shape_of(a));
}
template <class T>
void need_vec(const V<T>& a, const char* name, std::int64_t n) {
    if (a.ndim != 1 || a.shape(0) != n) bad_shape(name, "(" + std::to_string(n) + ",)", a);
}
// rows < 0: any number of rows. Returns the rows.
template <class T>
std::int64_t need_mat(const V<T>& a, const char* name, std::int64_t rows, std::int64_t cols) {
    if (a.ndim != 2 || (rows >= 0 && a.shape(0) != rows) || a.shape(1) != cols)
        bad_shape(name, "(" + (rows >= 0 ? std::to_string(rows) : std::string("N")) + ", " +
                            std::to_string(cols) + ")", a);
    return a.shape(0);
}
template <class T>
T* writable(const V<T>& a, const char* name) {
    if (!a.writeable) throw std::invalid_argument(std::string(name) + " is read-only");
    return a.ptr;
}
template <class T>
T* state_ptr(const V<T>& s, const char* name, std::int64_t n, bool needed) {
    if (!needed) return nullptr;  // sgd: any array (even empty) will do
    if (s.size != n)
        throw std::invalid_argument(std::string(name) + " must hold " + std::to_string(n) +
                                    " entries for this optimizer, got " + std::to_string(s.size));
    return writable(s, name);
}
// The optimizer's hyper-parameters as pfg::kHyperLen doubles (optim.hpp): a full (7,) vector, or the
// tutorials' short (3,) [lr, a, b] with eps 1e-7 and nothing else.
using Hyper = std::array<double, pfg::kHyperLen>;
inline Hyper read_hyper(const V<double>& h) {
    if (h.ndim != 1 || (h.shape(0) != 3 && h.shape(0) != pfg::kHyperLen))
        bad_shape("hyper", "(7,) = [lr, a, b, eps, weight_decay, style, max_norm] or (3,) = [lr, a, b]", h);
    Hyper out{0.0, 0.0, 0.0, 1e-7, 0.0, 0.0, 0.0};
    std::copy(h.ptr, h.ptr + h.shape(0), out.begin());
    for (double v : out)
        if (!std::isfinite(v)) throw std::invalid_argument("hyper must be finite");
    if (!(out[pfg::kEps] > 0.0)) throw std::invalid_argument("hyper: eps must be > 0");
    return out;
}
// Per-step learning rates: None, or float64 (n_steps,).
inline const double* lrs_ptr(const std::optional<V<double>>& lrs, std::int64_t n_steps) {
    if (!lrs) return nullptr;
    need_vec(*lrs, "lrs", n_steps);
    for (std::int64_t i = 0; i < n_steps; ++i)
        if (!std::isfinite(lrs->ptr[i])) throw std::invalid_argument("lrs must be finite");
    return lrs->ptr;
}

// The arguments both training-loop bindings share, checked before anything is touched:
// T (nx, n_out), idx (n_steps, B), losses (n_steps,), the optimizer, hyper and its state vectors.
template <class T>
struct StepArgs {
    std::int64_t n_steps, B;
    pfg::Opt opt;
    Hyper hyper;
    T *s1, *s2, *theta;
    double* losses;
};
template <class T>
StepArgs<T> check_step_args(const pfg::Mlp<T>& net, const V<T>& theta, const V<T>& Tt, std::int64_t nx,
                            const V<std::int64_t>& idx, const std::string& opt, const V<double>& hyper,
                            const V<T>& state1, const V<T>& state2, const V<double>& losses) {
    const std::int64_t np_ = net.n_params();
    need_vec(theta, "theta", np_);
    need_mat(Tt, "T", nx, net.n_out());
    if (idx.ndim != 2) bad_shape("idx", "(n_steps, batch)", idx);
    StepArgs<T> a;
    a.n_steps = idx.shape(0);
    a.B = idx.shape(1);
    need_vec(losses, "losses", a.n_steps);
    a.opt = pfg::parse_opt(opt);
    a.hyper = read_hyper(hyper);
    const int ns = pfg::opt_state_count(a.opt);
    a.s1 = state_ptr(state1, "state1", np_, ns >= 1);
    a.s2 = state_ptr(state2, "state2", np_, ns >= 2);
    if (a.n_steps > 0 && a.B < 1) throw std::invalid_argument("idx must have at least 1 column (batch size)");
    a.theta = writable(theta, "theta");
    a.losses = writable(losses, "losses");
    return a;
}

// (rows, nonzeros) of a CSR X given as indptr / indices / data with n_cols columns, after checking the
// arrays' shapes against each other and n_cols against the net's inputs (the values are the kernels' to check).
template <class T>
std::pair<std::int64_t, std::int64_t> csr_sizes(const pfg::Mlp<T>& net, const V<std::int64_t>& indptr,
                                                const V<std::int32_t>& indices, const V<T>& data, std::int64_t n_cols) {
    if (indptr.ndim != 1 || indptr.shape(0) < 1) bad_shape("indptr", "(N + 1,)", indptr);
    if (indices.ndim != 1) bad_shape("indices", "(nnz,)", indices);
    const std::int64_t nnz = indices.shape(0);
    need_vec(data, "data", nnz);
    if (n_cols != net.n_in())
        throw std::invalid_argument("X has " + std::to_string(n_cols) + " columns, the net expects " +
                                    std::to_string(net.n_in()));
    return {indptr.shape(0) - 1, nnz};
}

// The net plus a lock: its scratch buffers are shared by calls that run without the GIL.
template <class T>
struct PyMlp {
    pfg::Mlp<T> net;
    std::string act, loss;
    std::mutex mu;
    std::vector<T> onehot;  // train_step_any's one-hot targets from labels
    PyMlp(const std::vector<std::int64_t>& sizes, const std::string& a, const std::string& l)
        : net(sizes, pfg::parse_act(a), pfg::parse_loss(l)), act(a), loss(l) {}
};

// predict / loss / loss_grad of an Mlp<T> on x of element type X (T, or float for a double net).
template <class T, class X>
void mlp_predict(PyMlp<T>& p, const V<T>& theta, const V<X>& x, const V<T>& out) {
    need_vec(theta, "theta", p.net.n_params());
    const std::int64_t n = need_mat(x, "x", -1, p.net.n_in());
    need_mat(out, "out", n, p.net.n_out());
    T* op = writable(out, "out");
    std::optional<py::gil_scoped_release> nogil;
    if (n * p.net.n_params() >= kReleaseGilWork) nogil.emplace();
    std::lock_guard<std::mutex> lock(p.mu);  // taken after the release: never wait holding the GIL
    p.net.predict(theta.ptr, x.ptr, n, op);
}
constexpr const char* kPredictDoc = "out (N, n_out) = logits of x (N, n_in).";

template <class T, class X>
double mlp_loss(PyMlp<T>& p, const V<T>& theta, const V<X>& x, const V<T>& t, double weight_decay) {
    need_vec(theta, "theta", p.net.n_params());
    const std::int64_t n = need_mat(x, "x", -1, p.net.n_in());
    need_mat(t, "t", n, p.net.n_out());
    if (n < 1) throw std::invalid_argument("x must have at least 1 row");
    std::optional<py::gil_scoped_release> nogil;
    if (n * p.net.n_params() >= kReleaseGilWork) nogil.emplace();
    std::lock_guard<std::mutex> lock(p.mu);
    return p.net.loss(theta.ptr, x.ptr, t.ptr, n, weight_decay);
}
constexpr const char* kLossDoc = "Mean loss over the rows plus 0.5 * weight_decay * sum W^2.";

template <class T, class X>
double mlp_loss_grad(PyMlp<T>& p, const V<T>& theta, const V<X>& x, const V<T>& t, double weight_decay,
                     const V<T>& grad, std::optional<bool> sparse) {
    need_vec(theta, "theta", p.net.n_params());
    const std::int64_t n = need_mat(x, "x", -1, p.net.n_in());
    need_mat(t, "t", n, p.net.n_out());
    need_vec(grad, "grad", p.net.n_params());
    if (n < 1) throw std::invalid_argument("x must have at least 1 row");
    T* g = writable(grad, "grad");
    const int mode = sparse ? (*sparse ? 1 : 0) : -1;
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(p.mu);
    return p.net.loss_grad(theta.ptr, x.ptr, t.ptr, n, weight_decay, g, mode);
}
constexpr const char* kLossGradDoc =
    "Loss (as loss()); writes its gradient by backprop into grad. sparse: None picks the first layer's "
    "kernels from x's density (sparse kernels when at most 40% of x is nonzero), True / False force the "
    "sparse / dense (gemm) ones. All give the same result up to rounding. A float64 net also takes float32 "
    "x (read as float64).";

// One training step in one call (net.train_step): loss_grad into grad, then, when the loss is finite,
// the optimizer's update (after clipping by hyper's max_norm). Returns the loss; nothing is updated
// when it is not finite. StepOne holds the checked non-data arguments; run() is called under the lock.
template <class T>
struct StepOne {
    std::int64_t np_;
    pfg::Opt o;
    Hyper h;
    T *th, *s1, *s2, *g;
    std::int64_t step;
    StepOne(const pfg::Mlp<T>& net, const V<T>& theta, const std::string& opt, const V<double>& hyper,
            const V<T>& state1, const V<T>& state2, std::int64_t step_, const V<T>& grad)
        : np_(net.n_params()), o(pfg::parse_opt(opt)), h(read_hyper(hyper)), step(step_) {
        need_vec(theta, "theta", np_);
        need_vec(grad, "grad", np_);
        const int ns = pfg::opt_state_count(o);
        s1 = state_ptr(state1, "state1", np_, ns >= 1);
        s2 = state_ptr(state2, "state2", np_, ns >= 2);
        if (pfg::opt_is_adam(o) && step < 1)
            throw std::invalid_argument("adam needs step >= 1, got " + std::to_string(step));
        th = writable(theta, "theta");
        g = writable(grad, "grad");
    }
    template <class X>
    double run(pfg::Mlp<T>& net, const X* x, const T* t, std::int64_t n, double weight_decay) const {
        const double l = net.loss_grad(th, x, t, n, weight_decay, g);
        if (!std::isfinite(l)) return l;
        if (h[pfg::kMaxNorm] > 0.0) {
            const double f = pfg::clip_factor(std::sqrt(pfg::grad_sq_sum(g, np_)), h[pfg::kMaxNorm]);
            if (f != 1.0)
                for (std::int64_t i = 0; i < np_; ++i) g[i] *= static_cast<T>(f);
        }
        pfg::opt_update(o, th, g, s1, s2, np_, h.data(), step);
        return l;
    }
};

template <class T, class X>
double mlp_train_step(PyMlp<T>& p, const V<T>& theta, const V<X>& x, const V<T>& t, double weight_decay,
                      const std::string& opt, const V<double>& hyper, const V<T>& state1, const V<T>& state2,
                      std::int64_t step, const V<T>& grad) {
    const StepOne<T> s(p.net, theta, opt, hyper, state1, state2, step, grad);
    const std::int64_t n = need_mat(x, "x", -1, p.net.n_in());
    need_mat(t, "t", n, p.net.n_out());
    if (n < 1) throw std::invalid_argument("x must have at least 1 row");
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(p.mu);
    return s.run(p.net, x.ptr, t.ptr, n, weight_decay);
}

// A View of h when it is an exact numpy.ndarray (not a subclass) the caster accepts, else false.
template <class U>
bool exact_view(py::handle h, V<U>& out) {
    if (Py_TYPE(h.ptr()) != py::detail::npy_api::get().PyArray_Type_) return false;
    py::detail::make_caster<V<U>> c;
    if (!c.load(h, false)) return false;
    out = py::detail::cast_op<V<U>&>(c);
    return true;
}

// Whether `lab` is n labels (1-D) in [0, n_out).
template <class I>
bool labels_in_range(const V<I>& lab, std::int64_t n, std::int64_t n_out) {
    if (lab.ndim != 1 || lab.shape(0) != n) return false;
    for (std::int64_t i = 0; i < n; ++i)
        if (lab.ptr[i] < 0 || lab.ptr[i] >= n_out) return false;
    return true;
}

// net.train_step's first try, on x and t as the user passed them (the Python checks cost more than the
// step of a small net). Returns None, having touched nothing, unless x is an exact C-contiguous finite
// (n >= 1, n_in) array of the net's dtype (or float32 for a float64 net) and t is a finite (n, n_out)
// array of the net's dtype or, with n_out > 1, n int64/int32 labels in [0, n_out) (made one-hot here);
// the caller then checks and converts them (with its error messages) and calls train_step.
template <class T>
py::object mlp_train_step_any(PyMlp<T>& p, const V<T>& theta, py::handle x, py::handle t, double weight_decay,
                              const std::string& opt, const V<double>& hyper, const V<T>& state1,
                              const V<T>& state2, std::int64_t step, const V<T>& grad) {
    const StepOne<T> s(p.net, theta, opt, hyper, state1, state2, step, grad);
    const std::int64_t n_in = p.net.n_in(), n_out = p.net.n_out();
    V<T> xt;
    V<float> xf;
    std::int64_t n = -1;
    if (exact_view(x, xt)) {
        if (xt.ndim == 2 && xt.shape(1) == n_in && pfg::sparse::all_finite(xt.ptr, xt.size)) n = xt.shape(0);
    } else if (!std::is_same_v<T, float> && exact_view(x, xf)) {
        if (xf.ndim == 2 && xf.shape(1) == n_in && pfg::sparse::all_finite(xf.ptr, xf.size)) n = xf.shape(0);
    }
    if (n < 1) return py::none();
    V<T> td;
    V<std::int64_t> l64;
    V<std::int32_t> l32;
    const T* tp = nullptr;
    const std::int64_t* lab64 = nullptr;
    const std::int32_t* lab32 = nullptr;
    if (exact_view(t, td)) {
        if (td.ndim != 2 || td.shape(0) != n || td.shape(1) != n_out || !pfg::sparse::all_finite(td.ptr, td.size))
            return py::none();
        tp = td.ptr;
    } else if (n_out > 1 && exact_view(t, l64)) {
        if (!labels_in_range(l64, n, n_out)) return py::none();
        lab64 = l64.ptr;
    } else if (n_out > 1 && exact_view(t, l32)) {
        if (!labels_in_range(l32, n, n_out)) return py::none();
        lab32 = l32.ptr;
    } else {
        return py::none();
    }
    double l;
    {
        py::gil_scoped_release nogil;
        std::lock_guard<std::mutex> lock(p.mu);
        if (!tp) {  // labels -> one-hot rows in the object's scratch (under its lock)
            p.onehot.assign(static_cast<std::size_t>(n * n_out), T(0));
            for (std::int64_t i = 0; i < n; ++i)
                p.onehot[static_cast<std::size_t>(i * n_out + (lab64 ? lab64[i] : lab32[i]))] = T(1);
            tp = p.onehot.data();
        }
        l = xt.ptr ? s.run(p.net, xt.ptr, tp, n, weight_decay) : s.run(p.net, xf.ptr, tp, n, weight_decay);
    }
    return py::float_(l);
}
constexpr const char* kTrainStepDoc =
    "One step: loss_grad into grad, then (finite loss only) the optimizer update of theta and the state "
    "(opt, hyper, state1/state2, step as opt_update; the gradient clipped in grad by hyper's max_norm). "
    "Returns the loss.";

template <class T>
void bind_mlp(py::module_& m, const char* name, const char* dtype) {
    using P = PyMlp<T>;
    using A = V<T>;
    auto cls = py::class_<P>(m, name,
                  (std::string("Fully connected net on a flat ") + dtype +
                   " parameter vector (see _backends/numpy.py Mlp). Calls on one object from several "
                   "threads are serialised (it owns scratch buffers).").c_str())
        .def(py::init<const std::vector<std::int64_t>&, const std::string&, const std::string&>(),
             py::arg("sizes"), py::arg("activation"), py::arg("loss"))
        .def_property_readonly("n_params", [](const P& p) { return p.net.n_params(); })
        .def_property_readonly("sizes", [](const P& p) { return p.net.sizes(); })
        .def_property_readonly("activation", [](const P& p) { return p.act; })
        .def_property_readonly("loss_name", [](const P& p) { return p.loss; })
        .def("predict", &mlp_predict<T, T>, py::arg("theta"), py::arg("x"), py::arg("out"), kPredictDoc)
        .def("loss", &mlp_loss<T, T>, py::arg("theta"), py::arg("x"), py::arg("t"), py::arg("weight_decay"),
             kLossDoc)
        .def("loss_grad", &mlp_loss_grad<T, T>, py::arg("theta"), py::arg("x"), py::arg("t"),
             py::arg("weight_decay"), py::arg("grad"), py::arg("sparse") = py::none(), kLossGradDoc)
        .def("train_step", &mlp_train_step<T, T>, py::arg("theta"), py::arg("x"), py::arg("t"),
             py::arg("weight_decay"), py::arg("opt"), py::arg("hyper"), py::arg("state1"), py::arg("state2"),
             py::arg("step"), py::arg("grad"), kTrainStepDoc)
        .def("train_step_any", &mlp_train_step_any<T>, py::arg("theta"), py::arg("x"), py::arg("t"),
             py::arg("weight_decay"), py::arg("opt"), py::arg("hyper"), py::arg("state1"), py::arg("state2"),
             py::arg("step"), py::arg("grad"),
             "train_step on x and t as given, or None (nothing done) when they are not already in the form the "
             "kernels read: x an exact C-contiguous finite (n >= 1, n_in) array of the net's dtype (or float32 "
             "for a float64 net), t a finite (n, n_out) array of the net's dtype or, with n_out > 1, n int64 / "
             "int32 labels in [0, n_out). net.train_step's first try; on None it checks and converts them.")
        .def("train_steps",
             [](P& p, A theta, A X, A Tt, V<std::int64_t> idx, double weight_decay, const std::string& opt,
                V<double> hyper, A state1, A state2, std::int64_t step0, V<double> losses,
                std::optional<V<double>> lrs) -> std::int64_t {
                 const std::int64_t nx = need_mat(X, "X", -1, p.net.n_in());
                 const StepArgs<T> a =
                     check_step_args(p.net, theta, Tt, nx, idx, opt, hyper, state1, state2, losses);
                 const double* lr = lrs_ptr(lrs, a.n_steps);
                 py::gil_scoped_release nogil;
                 std::lock_guard<std::mutex> lock(p.mu);
                 // train_steps checks every index before the first step.
                 return p.net.train_steps(a.theta, X.ptr, nx, Tt.ptr, idx.ptr, a.n_steps, a.B, weight_decay, a.opt,
                                          a.hyper.data(), a.s1, a.s2, step0, a.losses, lr);
             },
             py::arg("theta"), py::arg("X"), py::arg("T"), py::arg("idx"), py::arg("weight_decay"), py::arg("opt"),
             py::arg("hyper"), py::arg("state1"), py::arg("state2"), py::arg("step0"), py::arg("losses"),
             py::arg("lrs") = py::none(),
             "Mini-batch steps over the rows idx[s] of X/T (idx int64 (n_steps, B)) with optimizer `opt`, "
             "updating theta and the state in place. hyper: float64 (7,) [lr, a, b, eps, weight_decay, style, "
             "max_norm] (or (3,) [lr, a, b]); lrs: None or float64 (n_steps,) learning rates per step. Writes "
             "each step's loss into losses (NaN where not done); stops at the first non-finite loss without "
             "applying that step. Returns the steps done.")
        .def("predict_csr",
             [](P& p, A theta, V<std::int64_t> indptr, V<std::int32_t> indices, A data, std::int64_t n_cols,
                V<std::int64_t> rows, A out, bool rows_checked) {
                 need_vec(theta, "theta", p.net.n_params());
                 const auto [nx, nnz] = csr_sizes(p.net, indptr, indices, data, n_cols);
                 if (rows.ndim != 1) bad_shape("rows", "(n,)", rows);
                 const std::int64_t n = rows.shape(0);
                 need_mat(out, "out", n, p.net.n_out());
                 T* op = writable(out, "out");
                 py::gil_scoped_release nogil;
                 std::lock_guard<std::mutex> lock(p.mu);
                 // predict_csr checks indptr, rows and (unless rows_checked) their column indices first
                 p.net.predict_csr(theta.ptr, indptr.ptr, indices.ptr, data.ptr, nx, nnz, rows.ptr, n, op,
                                   rows_checked);
             },
             py::arg("theta"), py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("n_cols"),
             py::arg("rows"), py::arg("out"), py::arg("rows_checked") = false,
             "out (n, n_out) = logits of the CSR rows `rows` (int64) of X (as train_steps_csr's), the first "
             "layer on their nonzeros: an evaluation subset of a CSR training set without a dense copy.")
        .def("train_steps_csr",
             [](P& p, A theta, V<std::int64_t> indptr, V<std::int32_t> indices, A data, std::int64_t n_cols, A Tt,
                V<std::int64_t> idx, double weight_decay, const std::string& opt, V<double> hyper, A state1,
                A state2, std::int64_t step0, V<double> losses, std::optional<V<double>> lrs,
                bool rows_checked) -> std::int64_t {
                 const auto [nx, nnz] = csr_sizes(p.net, indptr, indices, data, n_cols);
                 const StepArgs<T> a =
                     check_step_args(p.net, theta, Tt, nx, idx, opt, hyper, state1, state2, losses);
                 const double* lr = lrs_ptr(lrs, a.n_steps);
                 py::gil_scoped_release nogil;
                 std::lock_guard<std::mutex> lock(p.mu);
                 // train_steps_csr checks indptr, idx and the column indices of the rows it will read
                 // before the first step.
                 return p.net.train_steps_csr(a.theta, indptr.ptr, indices.ptr, data.ptr, nx, nnz, Tt.ptr, idx.ptr,
                                              a.n_steps, a.B, weight_decay, a.opt, a.hyper.data(), a.s1, a.s2,
                                              step0, a.losses, lr, rows_checked);
             },
             py::arg("theta"), py::arg("indptr"), py::arg("indices"), py::arg("data"), py::arg("n_cols"),
             py::arg("T"), py::arg("idx"), py::arg("weight_decay"), py::arg("opt"), py::arg("hyper"),
             py::arg("state1"), py::arg("state2"), py::arg("step0"), py::arg("losses"), py::arg("lrs") = py::none(),
             py::arg("rows_checked") = false,
             "train_steps with X in CSR form: indptr int64 (N + 1,), indices int32 (nnz,), data (nnz,) of the "
             "net's dtype, n_cols = the net's inputs. The first layer uses only the nonzeros; same results "
             "as train_steps on the dense X up to the order of the sums. rows_checked: every row's indices "
             "are known to be strictly increasing inside [0, n_cols) (a read-only CSR the caller built), so "
             "they are not scanned again (indptr and idx always are).");
    if constexpr (std::is_same_v<T, double>) {  // float32 x (the tutorials' images) into a float64 net
        cls.def("predict", &mlp_predict<T, float>, py::arg("theta"), py::arg("x"), py::arg("out"), kPredictDoc)
            .def("loss", &mlp_loss<T, float>, py::arg("theta"), py::arg("x"), py::arg("t"),
                 py::arg("weight_decay"), kLossDoc)
            .def("loss_grad", &mlp_loss_grad<T, float>, py::arg("theta"), py::arg("x"), py::arg("t"),
                 py::arg("weight_decay"), py::arg("grad"), py::arg("sparse") = py::none(), kLossGradDoc)
            .def("train_step", &mlp_train_step<T, float>, py::arg("theta"), py::arg("x"), py::arg("t"),
                 py::arg("weight_decay"), py::arg("opt"), py::arg("hyper"), py::arg("state1"), py::arg("state2"),
                 py::arg("step"), py::arg("grad"), kTrainStepDoc);
    }
}

// Rows and columns of a loss's dense (N, C) y and t, N >= 1, after checking them.
template <class T>
std::pair<std::int64_t, std::int64_t> loss_pair_shape(const V<T>& y, const V<T>& t) {
    if (y.ndim != 2) bad_shape("y", "(N, C)", y);
    const std::int64_t n = y.shape(0), c = y.shape(1);
    need_mat(t, "t", n, c);
    if (n < 1) throw std::invalid_argument("y must have at least 1 row");
    return {n, c};
}

// A layer stack's first-layer kernels, shapes checked: out = x @ other (grad false; other = W (D, H)) or
// out = x^T @ other (grad true; other = dout (N, H)). Returns whether x's nonzeros were used.
template <class T>
bool first_layer_call(const V<T>& x, const V<T>& other, const V<T>& out, bool grad) {
    if (x.ndim != 2) bad_shape("x", "(N, D)", x);
    const std::int64_t n = x.shape(0), d = x.shape(1);
    if (grad && (other.ndim != 2 || other.shape(0) != n)) bad_shape("dout", "(N, H) with N = x's rows", other);
    if (!grad && (other.ndim != 2 || other.shape(0) != d)) bad_shape("W", "(D, H) with D = x's columns", other);
    const std::int64_t h = other.shape(1);
    // (the gradient's column regroup counts entries in int32)
    if (n > INT_MAX || d > INT_MAX || h > INT_MAX || (grad && n * d > INT_MAX))
        throw std::invalid_argument(std::string(grad ? "first_layer_grad" : "first_layer_product") + ": too large");
    need_mat(out, "out", grad ? d : n, h);
    T* o = writable(out, "out");
    std::optional<py::gil_scoped_release> nogil;
    if (n * d * h >= kReleaseGilWork) nogil.emplace();
    return grad ? pfg::sparse::first_layer_grad(x.ptr, n, d, other.ptr, h, o)
                : pfg::sparse::first_layer_product(x.ptr, n, d, other.ptr, h, o);
}

template <class T>
void bind_elementwise(py::module_& m) {
    using A = V<T>;
    m.def("opt_update",
          [](const std::string& opt, A theta, A grad, A state1, A state2, V<double> hyper, std::int64_t step) {
              const pfg::Opt o = pfg::parse_opt(opt);
              const std::int64_t n = theta.size;
              if (grad.size != n)
                  throw std::invalid_argument("grad must have as many entries as theta (" + std::to_string(n) +
                                              "), got " + std::to_string(grad.size));
              const Hyper h = read_hyper(hyper);
              const int ns = pfg::opt_state_count(o);
              T* s1 = state_ptr(state1, "state1", n, ns >= 1);
              T* s2 = state_ptr(state2, "state2", n, ns >= 2);
              if (pfg::opt_is_adam(o) && step < 1)
                  throw std::invalid_argument("adam needs step >= 1, got " + std::to_string(step));
              T* th = writable(theta, "theta");
              std::optional<py::gil_scoped_release> nogil;
              if (n >= 4 * kReleaseGilWork) nogil.emplace();
              const T* g = grad.ptr;
              std::vector<T> clipped;  // grad itself is never modified
              if (h[pfg::kMaxNorm] > 0.0) {
                  const double f = pfg::clip_factor(std::sqrt(pfg::grad_sq_sum(g, n)), h[pfg::kMaxNorm]);
                  if (f != 1.0) {
                      clipped.assign(g, g + n);
                      const T c = T(f);
                      for (T& v : clipped) v *= c;
                      g = clipped.data();
                  }
              }
              // Big updates on a team, thread t on the slice [n t / nt, n (t + 1) / nt): the slices in which
              // loss_grad_split's threads summed the gradient, so each core updates data in its own cache
              // (on one core, theta's lines held by the other core's cache cost a transfer each).
              const int nth = n >= (std::int64_t(1) << 16) ? pfg::team_threads() : 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) if (nth > 1)
#endif
              {
                  const int tid = pfg::team_thread(), nt = pfg::team_size();
                  const std::int64_t q0 = n * tid / nt, q1 = n * (tid + 1) / nt;
                  pfg::opt_update(o, th + q0, g + q0, s1 ? s1 + q0 : nullptr, s2 ? s2 + q0 : nullptr, q1 - q0,
                                  h.data(), step);
              }
              if (nth > 1) pfg::team_done();
          },
          py::arg("opt"), py::arg("theta"), py::arg("grad"), py::arg("state1"), py::arg("state2"), py::arg("hyper"),
          py::arg("step"),
          "One optimizer update of theta (and the state arrays) in place; hyper = float64 (7,) [lr, a, b, eps, "
          "weight_decay, style, max_norm] (or (3,) [lr, a, b]), step = 1 for the first update. With "
          "max_norm > 0 the gradient is first clipped by its norm (grad itself is not modified).");
    m.def("all_finite",
          [](A a) {
              std::optional<py::gil_scoped_release> nogil;
              if (a.size >= 4 * kReleaseGilWork) nogil.emplace();
              // A large array (a training set checked before each accuracy pass) on a team: one core's scan
              // reads ~10 GB/s, a fifth of a 60,000-image accuracy call.
              const int nth = a.size >= (std::int64_t(1) << 22) ? pfg::team_threads() : 1;
              if (nth == 1) return pfg::sparse::all_finite(a.ptr, a.size);
              int bad = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) reduction(| : bad)
#endif
              {
                  const int tid = pfg::team_thread(), nt = pfg::team_size();
                  const std::int64_t q0 = a.size * tid / nt, q1 = a.size * (tid + 1) / nt;
                  bad |= !pfg::sparse::all_finite(a.ptr + q0, q1 - q0);
              }
              pfg::team_done();
              return bad == 0;
          },
          py::arg("a"), "True when the (C-contiguous, any shape) array has no inf or NaN.");
    m.def("first_layer_product", [](A x, A W, A out) { return first_layer_call(x, W, out, false); },
          py::arg("x"), py::arg("W"), py::arg("out"),
          "out = x @ W (C-contiguous), over x's nonzeros when x is mostly zeros and W finite (returns True), "
          "else by gemm.");
    m.def("first_layer_grad", [](A x, A D, A out) { return first_layer_call(x, D, out, true); },
          py::arg("x"), py::arg("dout"), py::arg("out"),
          "out = x^T @ dout (C-contiguous), over x's nonzeros when x is mostly zeros and dout finite (returns "
          "True), else by gemm: the first affine layer's weight gradient.");
    m.def("dense_to_csr",
          [](A x) {
              if (x.ndim != 2) bad_shape("x", "(N, D)", x);
              const std::int64_t n = x.shape(0), d = x.shape(1);
              if (d > INT32_MAX) throw std::invalid_argument("dense_to_csr: more than 2^31-1 columns");
              py::array_t<std::int64_t> indptr(n + 1);
              std::int64_t* ip = indptr.mutable_data();
              {
                  py::gil_scoped_release nogil;
                  pfg::sparse::count_rows(x.ptr, n, d, ip + 1);
                  ip[0] = 0;
                  for (std::int64_t r = 0; r < n; ++r) ip[r + 1] += ip[r];
              }
              py::array_t<std::int32_t> indices(ip[n]);
              py::array_t<T> data(ip[n]);
              std::int32_t* ind = indices.mutable_data();
              T* val = data.mutable_data();
              {
                  py::gil_scoped_release nogil;
                  pfg::sparse::pack_rows(x.ptr, n, d, ip, ind, val);
              }
              return py::make_tuple(indptr, indices, data);
          },
          py::arg("x"),
          "The nonzeros of x (N, D) by row (NaN counts as nonzero): (indptr int64 (N + 1,), indices int32 "
          "(nnz,), data (nnz,)), columns ascending within a row. OpenMP threads split the rows.");
    m.def("softmax",
          [](A x, A out) {
              if (x.ndim != 2) bad_shape("x", "(N, C)", x);
              const std::int64_t n = x.shape(0), c = x.shape(1);
              need_mat(out, "out", n, c);
              if (c < 1) throw std::invalid_argument("softmax needs at least 1 column");
              T* op = writable(out, "out");
              for (std::int64_t r = 0; r < n; ++r) pfg::softmax_row(x.ptr + r * c, op + r * c, c);
          },
          py::arg("x"), py::arg("out"), "out = row-wise softmax of x (N, C); out may be x.");
    m.def("cross_entropy_error",
          [](A y, A t) {
              const auto [n, c] = loss_pair_shape(y, t);
              double s = 0.0;
              for (std::int64_t r = 0; r < n; ++r) s += pfg::cross_entropy_row(y.ptr + r * c, t.ptr + r * c, c);
              return -s / double(n);
          },
          py::arg("y"), py::arg("t"), "-sum(t * log(y + 1e-7)) / N for dense (N, C) y and t.");
    m.def("mean_squared_error",
          [](A y, A t) {
              const auto [n, c] = loss_pair_shape(y, t);
              double s = 0.0;
              for (std::int64_t r = 0; r < n; ++r) s += pfg::squared_error_row(y.ptr + r * c, t.ptr + r * c, c);
              return 0.5 * s / double(n);
          },
          py::arg("y"), py::arg("t"), "0.5 * sum((y - t)**2) / N for dense (N, C) y and t.");
}

inline void register_all(py::module_& m) {
    bind_mlp<double>(m, "Mlp64", "float64");  // float64 first (the overload-order convention)
    bind_mlp<float>(m, "Mlp32", "float32");
    bind_elementwise<double>(m);
    bind_elementwise<float>(m);
}

}  // namespace nets_bind

// ---- section: composed nets' layers (layers.hpp) -----------------------------------------
#include "kernels/layers.hpp"
#include "mlp/stack.hpp"

namespace layers_bind {
using nets_bind::V;
using nets_bind::bad_shape;
using nets_bind::kReleaseGilWork;
using nets_bind::need_vec;
using nets_bind::writable;

// (N, D) of a 2-D array named `name`.
template <class T>
std::pair<std::int64_t, std::int64_t> mat(const V<T>& a, const char* name) {
    if (a.ndim != 2) bad_shape(name, "(N, D)", a);
    return {a.shape(0), a.shape(1)};
}
template <class T>
void same(const V<T>& a, const char* name, std::int64_t n, std::int64_t d) {
    nets_bind::need_mat(a, name, n, d);
}

template <class T>
void bind(py::module_& m) {
    using A = V<T>;
    m.def("matmul",
          [](A a, A b, bool trans_a, bool trans_b, A out) {
              if (a.ndim != 2) bad_shape("a", "(M, K)", a);
              if (b.ndim != 2) bad_shape("b", "(K, N)", b);
              const std::int64_t m_ = trans_a ? a.shape(1) : a.shape(0), k = trans_a ? a.shape(0) : a.shape(1);
              const std::int64_t kb = trans_b ? b.shape(1) : b.shape(0), n = trans_b ? b.shape(0) : b.shape(1);
              if (kb != k)
                  throw std::invalid_argument("matmul: op(a) is " + std::to_string(m_) + " x " + std::to_string(k) +
                                              ", op(b) " + std::to_string(kb) + " x " + std::to_string(n));
              if (m_ > INT_MAX || n > INT_MAX || k > INT_MAX) throw std::invalid_argument("matmul: too large for BLAS");
              need_mat(out, "out", m_, n);
              T* o = writable(out, "out");
              if (m_ * n == 0) return;
              if (k == 0) {
                  std::fill(o, o + m_ * n, T(0));
                  return;
              }
              std::optional<py::gil_scoped_release> nogil;
              if (m_ * n * k >= kReleaseGilWork) nogil.emplace();
              // Small products on one thread (as the Mlp's calls): a pool woken per layer spins against
              // the caller's next kernels.
              const pfg::BlasCap cap(pfg::blas_threads_for(double(m_) * double(n) * double(k)));
              pfg::gemm(trans_a, trans_b, static_cast<int>(m_), static_cast<int>(n), static_cast<int>(k), T(1),
                        a.ptr, static_cast<int>(a.shape(1)), b.ptr, static_cast<int>(b.shape(1)), T(0), o,
                        static_cast<int>(n));
          },
          py::arg("a"), py::arg("b"), py::arg("trans_a"), py::arg("trans_b"), py::arg("out"),
          "out (M, N) = op(a) @ op(b) (op: transposed when trans_a / trans_b) by this extension's OpenBLAS "
          "(the layer stacks' affine products: numpy's own BLAS pool would spin against the kernels' threads).");
    m.def("layer_act_forward",
          [](int code, double alpha, A z, A out) {
              const auto k = pfg::layers::to_lact(code);
              if (out.size != z.size) throw std::invalid_argument("out must have z's size");
              T* o = writable(out, "out");
              std::optional<py::gil_scoped_release> nogil;
              if (z.size >= kReleaseGilWork) nogil.emplace();
              pfg::layers::act_forward<T>(k, alpha, z.ptr, o, z.size);
          },
          py::arg("code"), py::arg("alpha"), py::arg("z"), py::arg("out"),
          "out = f(z) elementwise; code 0 relu, 1 sigmoid, 2 tanh, 3 leaky relu (slope alpha), 4 identity (pyfastgrad.spec.ACT_CODE).");
    m.def("layer_act_backward",
          [](int code, double alpha, A dout, A z, A a, A dz) {
              const auto k = pfg::layers::to_lact(code);
              if (z.size != dout.size || a.size != dout.size || dz.size != dout.size)
                  throw std::invalid_argument("dout, z, a and dz must have the same size");
              T* o = writable(dz, "dz");
              std::optional<py::gil_scoped_release> nogil;
              if (z.size >= kReleaseGilWork) nogil.emplace();
              pfg::layers::act_backward<T>(k, alpha, dout.ptr, z.ptr, a.ptr, o, z.size);
          },
          py::arg("code"), py::arg("alpha"), py::arg("dout"), py::arg("z"), py::arg("a"), py::arg("dz"),
          "dz = dout * f'(z) (from z for the ReLUs, from a = f(z) for sigmoid and tanh); dz may be dout.");
    m.def("bn_forward_train",
          [](A x, A gamma, A beta, double eps, A out, A xn, A mean, A var, A std_) {
              const auto [n, d] = mat(x, "x");
              if (n < 1) throw std::invalid_argument("x must have at least 1 row");
              if (!(eps > 0.0)) throw std::invalid_argument("eps must be > 0");
              need_vec(gamma, "gamma", d);
              need_vec(beta, "beta", d);
              same(out, "out", n, d);
              same(xn, "xn", n, d);
              need_vec(mean, "mean", d);
              need_vec(var, "var", d);
              need_vec(std_, "std", d);
              T *o = writable(out, "out"), *xp = writable(xn, "xn"), *mp = writable(mean, "mean"),
                *vp = writable(var, "var"), *sp = writable(std_, "std");
              std::optional<py::gil_scoped_release> nogil;
              if (x.size >= kReleaseGilWork) nogil.emplace();
              pfg::layers::bn_forward_train<T>(x.ptr, n, d, gamma.ptr, beta.ptr, eps, o, xp, mp, vp, sp);
          },
          py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps"), py::arg("out"), py::arg("xn"),
          py::arg("mean"), py::arg("var"), py::arg("std"),
          "Batch Normalization, training mode, over the rows of x (N, D): writes out = gamma * xn + beta, "
          "xn (N, D), and the batch mean, var and std = sqrt(var + eps) (D,).");
    m.def("bn_forward_eval",
          [](A x, A gamma, A beta, A rmean, A rvar, double eps, A out) {
              const auto [n, d] = mat(x, "x");
              if (!(eps > 0.0)) throw std::invalid_argument("eps must be > 0");
              need_vec(gamma, "gamma", d);
              need_vec(beta, "beta", d);
              need_vec(rmean, "running_mean", d);
              need_vec(rvar, "running_var", d);
              same(out, "out", n, d);
              T* o = writable(out, "out");
              std::optional<py::gil_scoped_release> nogil;
              if (x.size >= kReleaseGilWork) nogil.emplace();
              pfg::layers::bn_forward_eval<T>(x.ptr, n, d, gamma.ptr, beta.ptr, rmean.ptr, rvar.ptr, eps, o);
          },
          py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("running_mean"), py::arg("running_var"),
          py::arg("eps"), py::arg("out"),
          "Batch Normalization, evaluation mode: out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta.");
    m.def("bn_backward",
          [](A dout, A xn, A std_, A gamma, A dx, A dgamma, A dbeta) {
              const auto [n, d] = mat(dout, "dout");
              if (n < 1) throw std::invalid_argument("dout must have at least 1 row");
              same(xn, "xn", n, d);
              need_vec(std_, "std", d);
              need_vec(gamma, "gamma", d);
              same(dx, "dx", n, d);
              need_vec(dgamma, "dgamma", d);
              need_vec(dbeta, "dbeta", d);
              T *o = writable(dx, "dx"), *g = writable(dgamma, "dgamma"), *b = writable(dbeta, "dbeta");
              std::optional<py::gil_scoped_release> nogil;
              if (dout.size >= kReleaseGilWork) nogil.emplace();
              pfg::layers::bn_backward<T>(dout.ptr, xn.ptr, std_.ptr, gamma.ptr, n, d, o, g, b);
          },
          py::arg("dout"), py::arg("xn"), py::arg("std"), py::arg("gamma"), py::arg("dx"), py::arg("dgamma"),
          py::arg("dbeta"), "Backward of bn_forward_train: writes dx (N, D), dgamma and dbeta (D,).");
    m.def("mul_mask",
          [](A x, A mask, A out) {
              if (mask.size != x.size || out.size != x.size)
                  throw std::invalid_argument("x, mask and out must have the same size");
              T* o = writable(out, "out");
              std::optional<py::gil_scoped_release> nogil;
              if (x.size >= kReleaseGilWork) nogil.emplace();
              pfg::layers::mul_mask<T>(x.ptr, mask.ptr, o, x.size);
          },
          py::arg("x"), py::arg("mask"), py::arg("out"), "Dropout: out = x * mask (out may be x).");
}


// A layer stack's training step in one call (mlp/stack.hpp; pyfastgrad/_layer_program.py Program).
template <class T>
struct PyStack {
    pfg::Stack<T> s;
    std::mutex mu;
    PyStack(std::vector<pfg::StackOp> ops, std::int64_t n_in, std::int64_t n_params, double eps)
        : s(std::move(ops), n_in, n_params, eps) {}
};

template <class T, class X>
double stack_loss_grad(PyStack<T>& p, std::int64_t n_params, const V<T>& theta, const V<X>& x, const V<T>& t,
                       double wd, const V<T>& grad, const std::vector<V<T>>& masks, const std::vector<V<T>>& means,
                       const std::vector<V<T>>& vars) {
    need_vec(theta, "theta", n_params);
    need_vec(grad, "grad", n_params);
    const std::int64_t n = nets_bind::need_mat(x, "x", -1, p.s.n_in());
    nets_bind::need_mat(t, "t", n, p.s.n_out());
    if (n < 1) throw std::invalid_argument("x must have at least 1 row");
    if (static_cast<int>(masks.size()) != p.s.n_dropout())
        throw std::invalid_argument("need " + std::to_string(p.s.n_dropout()) + " dropout masks, got " +
                                    std::to_string(masks.size()));
    if (static_cast<int>(means.size()) != p.s.n_bn() || static_cast<int>(vars.size()) != p.s.n_bn())
        throw std::invalid_argument("need " + std::to_string(p.s.n_bn()) + " mean and var arrays");
    std::vector<const T*> mp;
    std::vector<T*> mn, vr;
    size_t di = 0, bi = 0;
    for (const pfg::StackOp& op : p.s.ops()) {
        if (op.kind == pfg::StackOp::Dropout) {
            nets_bind::need_mat(masks[di], "mask", n, op.m);
            mp.push_back(masks[di++].ptr);
        }
        if (op.kind == pfg::StackOp::BatchNorm) {
            need_vec(means[bi], "mean", op.m);
            need_vec(vars[bi], "var", op.m);
            mn.push_back(writable(means[bi], "mean"));
            vr.push_back(writable(vars[bi++], "var"));
        }
    }
    T* g = writable(grad, "grad");
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(p.mu);
    return p.s.loss_grad(theta.ptr, x.ptr, n, t.ptr, wd, g, mp.data(), mn.data(), vr.data());
}

template <class T>
void bind_stack(py::module_& m, const char* name) {
    using P = PyStack<T>;
    auto cls = py::class_<P>(m, name,
                             "A layer stack (Affine, activation, BatchNorm, Dropout; softmax cross-entropy head): "
                             "its training-mode loss and gradient in one call.");
    cls.def(py::init([](const std::vector<int>& kinds, const std::vector<std::int64_t>& ws,
                        const std::vector<std::int64_t>& bs, const std::vector<std::int64_t>& k,
                        const std::vector<std::int64_t>& mm, const std::vector<int>& acts,
                        const std::vector<double>& alphas, std::int64_t n_in, std::int64_t n_params, double eps) {
                const size_t L = kinds.size();
                if (ws.size() != L || bs.size() != L || k.size() != L || mm.size() != L || acts.size() != L ||
                    alphas.size() != L)
                    throw std::invalid_argument("stack: one entry per layer in every list");
                std::vector<pfg::StackOp> ops(L);
                for (size_t i = 0; i < L; ++i) ops[i] = pfg::StackOp{kinds[i], ws[i], bs[i], k[i], mm[i], acts[i], alphas[i]};
                return std::make_unique<P>(std::move(ops), n_in, n_params, eps);
            }),
            py::arg("kinds"), py::arg("ws"), py::arg("bs"), py::arg("k"), py::arg("m"), py::arg("acts"),
            py::arg("alphas"), py::arg("n_in"), py::arg("n_params"), py::arg("bn_eps"));
    const char* doc = "Training-mode loss (mean over rows + 0.5 wd sum W^2) and its gradient into grad; writes each "
                      "BatchNorm layer's batch mean and var into means/vars.";
    cls.def("loss_grad", &stack_loss_grad<T, T>, py::arg("n_params"), py::arg("theta"), py::arg("x"), py::arg("t"),
            py::arg("weight_decay"), py::arg("grad"), py::arg("masks"), py::arg("means"), py::arg("vars"), doc);
    if constexpr (std::is_same_v<T, double>)
        cls.def("loss_grad", &stack_loss_grad<T, float>, py::arg("n_params"), py::arg("theta"), py::arg("x"),
                py::arg("t"), py::arg("weight_decay"), py::arg("grad"), py::arg("masks"), py::arg("means"),
                py::arg("vars"), doc);
}

}  // namespace layers_bind

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyfastgrad C++ kernels (pybind11, OpenBLAS, OpenMP)";

    // The kernel contract as compiled: tests/test_spec.py compares it with pyfastgrad/spec.py.
    m.def("_spec", []() {
        py::dict d, act, loss, lact, opt, states, adam, decoupled;
        for (int i = 0; i < int(std::size(pfg::kActNames)); ++i) act[pfg::kActNames[i]] = i;
        for (int i = 0; i < int(std::size(pfg::kLossNames)); ++i) loss[pfg::kLossNames[i]] = i;
        for (int i = 0; i < pfg::layers::kLActCount; ++i) lact[pfg::layers::kLActNames[i]] = i;
        for (int i = 0; i < int(std::size(pfg::kOptNames)); ++i) {
            const auto o = static_cast<pfg::Opt>(i);
            opt[pfg::kOptNames[i]] = i;
            states[pfg::kOptNames[i]] = pfg::opt_state_count(o);
            adam[pfg::kOptNames[i]] = pfg::opt_is_adam(o);
            decoupled[pfg::kOptNames[i]] = pfg::opt_decoupled_decay(o);
        }
        d["act"] = act, d["loss"] = loss, d["layer_act"] = lact, d["opt"] = opt;
        d["opt_states"] = states, d["opt_bias_corrected"] = adam, d["opt_decoupled_decay"] = decoupled;
        d["hyper_len"] = pfg::kHyperLen;
        return d;
    }, "Codes and names of the compiled enums (Act, Loss, LAct, Opt) and the optimizers' state counts and flags.");

    m.def("blas_config", []() { return std::string(pfg::blas_config()); },
          "OpenBLAS build configuration string.");
    m.def("blas_num_threads", &pfg::blas_num_threads, "Threads OpenBLAS uses.");
    m.def("blas_set_num_threads", &pfg::blas_set_num_threads, py::arg("n"),
          "Set the number of OpenBLAS threads.");
    m.def("set_call_work", [](double blas, double sparse, std::optional<double> split, std::optional<double> rows) {
        for (double v : {blas, sparse, split.value_or(0.0), rows.value_or(0.0)})
            if (!(v >= 0)) throw std::invalid_argument("set_call_work: work must be >= 0");
        pfg::call_work().blas = blas;
        pfg::call_work().sparse = sparse;
        if (split) pfg::call_work().split = *split;
        if (rows) pfg::call_work().rows = *rows;
    }, py::arg("blas"), py::arg("sparse"), py::arg("split") = py::none(), py::arg("rows") = py::none(),
          "Multiply-adds below which one kernel call runs on the calling thread (benchmarks): OpenBLAS's team "
          "(blas), the sparse first layer's bands (sparse), loss_grad's split of the rows (split), predict/loss's "
          "rows on a team (rows); None keeps the current value (csrc/core/parallel.hpp).");
    m.def("set_adaptive_threads", [](bool on) { pfg::FreeCores::get().set_enabled(on); }, py::arg("on"),
          "Whether teams shrink to the cores other processes leave free (csrc/core/parallel.hpp).");
    m.def("free_threads", [](int want) { return pfg::FreeCores::get().of(want); }, py::arg("want"),
          "Of `want` threads, how many the cores other processes leave free allow now.");
    m.def("get_call_work", []() {
        const auto& w = pfg::call_work();
        return py::make_tuple(w.blas, w.sparse, w.split, w.rows);
    }, "(blas, sparse, split, rows) thresholds of set_call_work.");
    m.def("openmp_max_threads", []() {
#ifdef _OPENMP
        return omp_get_max_threads();
#else
        return 1;
#endif
    }, "OpenMP threads available to the kernels (1 when built without OpenMP).");
    m.def("openmp_set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("openmp_set_num_threads: n must be >= 1");
#ifdef _OPENMP
        omp_set_num_threads(n);
#endif
    }, py::arg("n"), "Set the OpenMP threads of the kernels (process-wide default for new regions).");

    m.def("_set_isa", [](int level) {
              if (level < -1 || level > 2) throw std::invalid_argument("_set_isa: level must be -1, 0, 1 or 2");
              pfg::simd::requested() = level;
              return pfg::simd::level();
          }, py::arg("level"),
          "Testing hook: the instruction set of every kernel with clones (csrc/core/simd.hpp: 2 AVX-512, 1 AVX2, "
          "0 baseline, -1 the best available; capped at what the CPU has). Returns the level in use.");
    m.def("_isa", []() { return pfg::simd::level(); }, "The instruction-set level the kernels use now.");

    // ---- register: numerical gradient ----
    {
        const char* doc = "Central-difference gradient of the full MLP loss for every parameter (flat "
                          "layout), written to grad; theta is only read.";
        m.def("mlp_numerical_gradient", &numgrad_bind::mlp_numgrad<double>, py::arg("sizes"),
              py::arg("activation"), py::arg("loss"), py::arg("theta").noconvert(), py::arg("x").noconvert(),
              py::arg("t").noconvert(), py::arg("weight_decay"), py::arg("h"), py::arg("grad").noconvert(), doc);
        m.def("mlp_numerical_gradient", &numgrad_bind::mlp_numgrad<float>, py::arg("sizes"),
              py::arg("activation"), py::arg("loss"), py::arg("theta").noconvert(), py::arg("x").noconvert(),
              py::arg("t").noconvert(), py::arg("weight_decay"), py::arg("h"), py::arg("grad").noconvert(), doc);
        const char* kdoc = "Rows per parameter in which a step to the stored theta_p + h (plus) / theta_p - h "
                           "(minus) changes the state of a ReLU pre-activation or hinge margin (int64 "
                           "arrays of length n_params, overwritten); theta is only read.";
        m.def("mlp_kink_counts", &numgrad_bind::mlp_kinks<double>, py::arg("sizes"), py::arg("activation"),
              py::arg("loss"), py::arg("theta").noconvert(), py::arg("x").noconvert(), py::arg("t").noconvert(),
              py::arg("h"), py::arg("plus").noconvert(), py::arg("minus").noconvert(), kdoc);
        m.def("mlp_kink_counts", &numgrad_bind::mlp_kinks<float>, py::arg("sizes"), py::arg("activation"),
              py::arg("loss"), py::arg("theta").noconvert(), py::arg("x").noconvert(), py::arg("t").noconvert(),
              py::arg("h"), py::arg("plus").noconvert(), py::arg("minus").noconvert(), kdoc);
        m.def("numerical_gradient_callback", &numgrad_bind::callback_numgrad, py::arg("f"), py::arg("x"),
              py::arg("h"), py::arg("forward"), py::arg("out"),
              "Per-element differences of f at x (float64/float32, any strides; perturbed in place and "
              "restored bit-exactly) into the C-contiguous out: (f(x+h) - f(x-h)) / 2h, or "
              "(f(x+h) - f(x)) / h when forward.");
    }

    // ---- register: nets, losses, optimizers, training ----
    nets_bind::register_all(m);

    // ---- register: composed nets' layers ----
    layers_bind::bind<double>(m);  // float64 first
    layers_bind::bind<float>(m);
    layers_bind::bind_stack<double>(m, "Stack64");
    layers_bind::bind_stack<float>(m, "Stack32");
}
