// Helpers shared by the binding files. Every entry point takes torch tensors, reads their
// address, dtype, device, shape and contiguity through Python (no libtorch link), checks
// them against the sizes the kernel will touch, and only then releases the GIL and runs
// the CPU or the CUDA implementation (on the tensors' device, under a device guard and on
// torch's current stream of that device). Bad arguments raise ValueError naming them.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <deque>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#ifdef HUDD_WITH_CUDA
#include <cuda_runtime.h>

#include "hudd/cuda_check.cuh"
#endif

namespace hudd_py {

namespace py = pybind11;

// What a binding needs to know about one torch tensor (read with few Python calls: a
// binding runs once per layer and batch, so its overhead is the kernel launch's rival).
struct TensorView {
  py::handle tensor;  // borrowed: the caller holds the tensor for the whole call
  std::uintptr_t ptr = 0;
  std::string name;    // the argument's name, for messages
  std::string dtype;   // "float32", "float64", "int64", ...
  std::string device;  // "cpu", "cuda:0", "meta", ...
  bool cuda = false;
  int device_index = -1;
  std::vector<int64_t> shape;
  int64_t numel = 0;
  bool contiguous = false;
};

// torch's Tensor type, its dtype singletons and the attribute names a view reads, looked
// up once (leaked on purpose: they must outlive every call and never be destroyed after
// the interpreter).
struct TorchTypes {
  py::object tensor_type;
  std::vector<std::pair<py::object, std::string>> dtypes;
  py::object current_stream;  // torch.cuda.current_stream
  py::str dtype{"dtype"}, is_cuda{"is_cuda"}, is_cpu{"is_cpu"}, get_device{"get_device"},
      shape{"shape"}, is_contiguous{"is_contiguous"}, data_ptr{"data_ptr"};
};

inline const TorchTypes& torch_types() {
  static const TorchTypes* types = [] {
    py::module_ torch = py::module_::import("torch");
    auto* t = new TorchTypes{torch.attr("Tensor"), {}, torch.attr("cuda").attr("current_stream")};
    for (const char* name : {"float32", "float64", "int64", "int32", "float16", "bfloat16"})
      t->dtypes.emplace_back(torch.attr(name), name);
    return t;
  }();
  return *types;
}

inline std::string dtype_name(py::handle dtype) {
  for (const auto& [object, name] : torch_types().dtypes)
    if (dtype.is(object)) return name;
  const std::string text = py::str(dtype);
  return text.rfind("torch.", 0) == 0 ? text.substr(6) : text;
}

// torch's current CUDA stream on `device`, the one the caller's work is queued on.
inline void* current_stream(int device) {
  const py::object stream = torch_types().current_stream(device);
  return reinterpret_cast<void*>(stream.attr("cuda_stream").cast<std::uintptr_t>());
}

inline TensorView view_of(py::handle t, const std::string& op, const char* name) {
  const TorchTypes& tt = torch_types();
  // A type check, not isinstance(): torch's metaclass makes the latter slow.
  if (!PyObject_TypeCheck(t.ptr(), reinterpret_cast<PyTypeObject*>(tt.tensor_type.ptr())))
    throw std::invalid_argument(op + ": " + name + " must be a torch.Tensor");
  TensorView v;
  v.tensor = t;
  v.name = name;
  v.dtype = dtype_name(t.attr(tt.dtype));
  v.cuda = t.attr(tt.is_cuda).cast<bool>();
  if (v.cuda) {
    v.device_index = t.attr(tt.get_device)().cast<int>();
    v.device = "cuda:" + std::to_string(v.device_index);
  } else {
    v.device = t.attr(tt.is_cpu).cast<bool>() ? "cpu" : std::string(py::str(t.attr("device")));
  }
  const py::tuple shape = t.attr(tt.shape);  // torch.Size is a tuple
  v.shape.resize(shape.size());
  v.numel = 1;
  for (size_t i = 0; i < v.shape.size(); ++i) {
    v.shape[i] = PyLong_AsLongLong(shape[i].ptr());
    v.numel *= v.shape[i];
  }
  v.contiguous = t.attr(tt.is_contiguous)().cast<bool>();
  v.ptr = t.attr(tt.data_ptr)().cast<std::uintptr_t>();
  return v;
}

inline void require_cuda_build(const std::string& op) {
#ifndef HUDD_WITH_CUDA
  throw std::runtime_error(op +
                           ": hudd_core._C was built without CUDA (set HUDD_CUDA=on and rebuild)");
#endif
}

#ifdef HUDD_WITH_CUDA
// Makes `device` current for the lifetime of the guard, then restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    hudd::check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) hudd::check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};
#endif

// One call of a binding: collects and checks its tensors (the first one fixes the device
// and, for floating-point ops, the dtype), then runs the kernel.
class Call {
 public:
  explicit Call(std::string op) : op_(std::move(op)) {}

  const std::string& op() const { return op_; }

  // A contiguous tensor of `dtype` ("" = the first tensor's) holding exactly `numel`
  // elements (-1: any), on the same device as the first tensor.
  const TensorView& tensor(py::handle t, const char* name, int64_t numel,
                           const std::string& dtype = "") {
    views_.push_back(view_of(t, op_, name));
    const TensorView& v = views_.back();
    check_device(v);
    check_dtype(v, dtype);
    if (!v.contiguous) fail(v, "must be contiguous");
    if (numel >= 0 && v.numel != numel)
      fail(v, "must hold " + std::to_string(numel) + " elements, got " +
                  std::to_string(v.numel) + " (shape " + shape_text(v) + ")");
    return v;
  }

  // A contiguous 2-D tensor of rows × cols (-1: any), e.g. a block of rows.
  const TensorView& rows(py::handle t, const char* name, int64_t rows, int64_t cols,
                         const std::string& dtype = "") {
    const TensorView& v = tensor(t, name, -1, dtype);
    check_shape(v, rows, cols);
    return v;
  }

  // A 2-D tensor of rows × cols (-1: any) whose rows may be padded (unit column stride):
  // a block of a GEMM result or of a larger output.
  struct Matrix {
    std::uintptr_t ptr;
    int64_t rows, cols, ld;
  };
  Matrix matrix(py::handle t, const char* name, int64_t rows, int64_t cols,
                const std::string& dtype = "") {
    views_.push_back(view_of(t, op_, name));
    const TensorView& v = views_.back();
    check_device(v);
    check_dtype(v, dtype);
    check_shape(v, rows, cols);
    const int64_t r = v.shape[0], c = v.shape[1];
    if (v.contiguous) return {v.ptr, r, c, c};
    const auto strides = v.tensor.attr("stride")().cast<std::vector<int64_t>>();
    if (r > 1 && c > 0 && (strides[1] != 1 || strides[0] < c))
      fail(v, "must have contiguous rows (strides " + std::to_string(strides[0]) + ", " +
                  std::to_string(strides[1]) + ")");
    return {v.ptr, r, c, r > 1 ? strides[0] : c};
  }

  // An optional tensor: None gives a null pointer.
  std::uintptr_t optional(py::handle t, const char* name, int64_t numel) {
    return t.is_none() ? 0 : tensor(t, name, numel).ptr;
  }

  bool on_cuda() const { return views_.front().cuda; }

  // Runs f(tag) with tag a float or double (the first tensor's dtype); f reads
  // `stream()` to choose between the CPU and the CUDA implementation.
  template <typename F>
  void run_float(F&& f) {
    const std::string& dt = views_.front().dtype;
    if (dt == "float32") {
      run([&] { f(float{}); });
    } else if (dt == "float64") {
      run([&] { f(double{}); });
    } else {
      fail(views_.front(), "must be float32 or float64, got " + dt);
    }
  }

  // Runs f() without the GIL, under a device guard when the tensors are on a GPU.
  template <typename F>
  void run(F&& f) {
    if (!on_cuda()) {
      py::gil_scoped_release nogil;
      f();
      return;
    }
    require_cuda_build(op_);
#ifdef HUDD_WITH_CUDA
    const int device = views_.front().device_index;
    stream_ = current_stream(device);
    py::gil_scoped_release nogil;
    DeviceGuard guard(device);
    f();
#endif
  }

  // torch's current stream of the tensors' GPU; null on the CPU.
  void* stream() const { return stream_; }

  [[noreturn]] void fail(const TensorView& v, const std::string& what) const {
    throw std::invalid_argument(op_ + ": " + v.name + " " + what);
  }

  // A plain (non-tensor) argument out of range.
  [[noreturn]] void fail(const char* name, const std::string& what) const {
    throw std::invalid_argument(op_ + ": " + name + " " + what);
  }

 private:
  void check_device(const TensorView& v) const {
    if (!v.cuda && v.device != "cpu")
      fail(v, "must be on the CPU or a CUDA device, got " + v.device);
    const TensorView& first = views_.front();
    if (v.device != first.device)
      fail(v, "is on " + v.device + " but " + first.name + " is on " + first.device);
  }

  void check_dtype(const TensorView& v, const std::string& dtype) const {
    const std::string& want = dtype.empty() ? views_.front().dtype : dtype;
    if (v.dtype != want) fail(v, "must be " + want + ", got " + v.dtype);
  }

  void check_shape(const TensorView& v, int64_t rows, int64_t cols) const {
    if (v.shape.size() != 2 || (rows >= 0 && v.shape[0] != rows) ||
        (cols >= 0 && v.shape[1] != cols))
      fail(v, "must be 2-D of " + (rows >= 0 ? std::to_string(rows) : std::string("any")) +
                  " x " + (cols >= 0 ? std::to_string(cols) : std::string("any")) +
                  ", got shape " + shape_text(v));
  }

  static std::string shape_text(const TensorView& v) {
    std::string s = "(";
    for (size_t i = 0; i < v.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(v.shape[i]);
    return s + ")";
  }

  std::string op_;
  std::deque<TensorView> views_;  // a deque: references handed out stay valid
  void* stream_ = nullptr;

 public:
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;
};

template <typename T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace hudd_py
