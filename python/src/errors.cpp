// ckptio::Error -> the Python class for its code (defined in ckptio/errors.py, so that users can
// import, subclass-check and pickle them without the extension).
#include <nanobind/nanobind.h>

#include <string>

#include "bindings.h"
#include "ckptio/error.h"

namespace nb = nanobind;

namespace ckptio::python {

void bind_errors(nb::module_& m) {
  m.def("error_code_names", [] {
    nb::list names;
    for (int c = 0; c <= static_cast<int>(ErrorCode::Timeout); ++c) {
      names.append(nb::str(std::string(error_code_name(static_cast<ErrorCode>(c))).c_str()));
    }
    return names;
  });
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      nb::gil_scoped_acquire gil;
      nb::object errors = nb::module_::import_("ckptio.errors");
      nb::object cls =
          errors.attr("error_class")(nb::str(std::string(error_code_name(e.code())).c_str()));
      // The CLI's line: "<code>: <message>", control characters as \xNN; names from files may
      // hold bytes that are not UTF-8, which Python shows escaped rather than failing to decode.
      std::string line = std::string(error_code_name(e.code())) + ": " + printable(e.message());
      nb::object text = nb::steal(PyUnicode_DecodeUTF8(line.data(), static_cast<Py_ssize_t>(line.size()),
                                                       "backslashreplace"));
      PyErr_SetObject(cls.ptr(), text.ptr());
    }
  });
}

}  // namespace ckptio::python
