#include "value_bridge.h"

namespace nb = nanobind;

namespace ckptio::python {

nb::object value_to_python(const pt::Value& v, const TensorPolicy& on_tensor) {
  using Kind = pt::Value::Kind;
  switch (v.kind()) {
    case Kind::None: return nb::none();
    case Kind::Bool: return nb::bool_(v.as_bool());
    case Kind::Int: return nb::int_(v.as_int());
    case Kind::Float: return nb::float_(v.as_float());
    case Kind::Str: return nb::str(v.as_str().c_str(), v.as_str().size());
    case Kind::Bytes: return nb::bytes(v.as_str().data(), v.as_str().size());
    case Kind::List:
    case Kind::Tuple: {
      nb::list out;
      for (const auto& item : v.items()) out.append(value_to_python(item, on_tensor));
      if (v.kind() == Kind::Tuple) return nb::tuple(out);
      return out;
    }
    case Kind::Dict: {
      nb::dict out;
      for (const auto& [key, value] : v.dict_items()) {
        out[value_to_python(key, on_tensor)] = value_to_python(value, on_tensor);
      }
      return out;
    }
    case Kind::Tensor: return on_tensor(v.as_tensor());
  }
  return nb::none();
}

nb::list shape_list(const Shape& shape) {
  nb::list out;
  for (int64_t d : shape) out.append(d);
  return out;
}

}  // namespace ckptio::python
