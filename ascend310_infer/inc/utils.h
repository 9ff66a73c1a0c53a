/**
 * File helpers of the TinyBERT Ascend 310 runner (see ../src/main.cc for the file contract).
 *
 * Not compiled on the development machines of this project (no Ascend toolkit, no MindSpore C++ headers
 * there); written against the MindSpore C++ inference API headers include/api/{types,model,context}.h.
 */
#ifndef TINYBERT_ASCEND310_INFER_INC_UTILS_H_
#define TINYBERT_ASCEND310_INFER_INC_UTILS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "include/api/types.h"

/// Absolute path of an existing file or directory, or "" if it does not exist.
std::string RealPath(const std::string &path);

/// File name without its directory: "a/b/tinybert_bs32_0.bin" -> "tinybert_bs32_0.bin".
std::string BaseName(const std::string &path);

/// Names (not paths) of the regular "*.bin" files of `dir`, sorted lexicographically. The same sort in the
/// three input folders keeps their batches aligned (preprocess.py writes the same names into each).
/// Returns false and sets `error` if the folder cannot be read.
bool ListBinFiles(const std::string &dir, std::vector<std::string> *names, std::string *error);

/// Reads a whole file into `buffer`. Returns false and sets `error` (naming the file) on failure.
bool ReadBinaryFile(const std::string &path, std::vector<uint8_t> *buffer, std::string *error);

/// Creates `dir` and its parents (like `mkdir -p`). Returns false and sets `error` on failure.
bool MakeDirs(const std::string &dir, std::string *error);

/// Writes output k of one batch to <result_dir>/<input stem>_<k>.bin (raw bytes, C order).
/// Returns false and sets `error` on failure.
bool WriteOutputs(const std::string &input_name, const std::vector<mindspore::MSTensor> &outputs,
                  const std::string &result_dir, std::string *error);

/// "[32, 128]" for log and error messages.
std::string ShapeToString(const std::vector<int64_t> &shape);

#endif  // TINYBERT_ASCEND310_INFER_INC_UTILS_H_
