/**
 * TinyBERT offline inference on Ascend (310 / 310P) with the MindSpore C++ inference API.
 *
 *   ./out/main --mindir_path=sst2.mindir \
 *       --input0_path=preprocess_Result/00_input_ids --input1_path=preprocess_Result/01_token_type_ids \
 *       --input2_path=preprocess_Result/02_attention_mask --result_path=./result_Files --device_id=0
 *
 * File contract (written by preprocess.py, scored by postprocess.py; scripts/run_infer_cpu.py is the CPU
 * stand-in with the same contract):
 *   inputs : <inputK_path>/tinybert_bs{B}_{i}.bin, int32 [B, S] C order; K = 0 input_ids, 1 token_type_ids,
 *            2 attention_mask (the order of the exported model's inputs). Each folder is listed and sorted
 *            by name; the three folders must hold the same names.
 *   outputs: <result_path>/tinybert_bs{B}_{i}_{k}.bin, the raw bytes of model output k (k = 0: float32
 *            logits [B, C], or [B, S, C] == [B*S, C] for NER).
 *   timing : per-batch Predict() latency; the mean is printed and written to --time_file.
 *
 * Two builds of the same source (CMake option MS_BACKEND, chosen by build.sh):
 *   lite      (default for MindSpore 2.x) MindSpore Lite cloud inference: Model::Build(path, kMindIR, ctx).
 *             MindSpore 2.x wheels no longer ship include/api; the Lite package does (LITE_HOME).
 *   mindspore (MindSpore 1.x wheels, as the model zoo's 310 programs): Serialization::Load(file, kMindIR,
 *             &graph) + Model::Build(GraphCell(graph), ctx), with TINYBERT_USE_GRAPH_CELL defined.
 * Both use mindspore::AscendDeviceInfo (Ascend310DeviceInfo is an alias of it since MindSpore 1.6).
 *
 * NOT COMPILED OR RUN IN THIS PROJECT'S CI: there is no Ascend toolkit and no MindSpore C++ SDK on the
 * development machines. The calls follow the MindSpore include/api headers (model.h, context.h, types.h,
 * serialization.h); build and run it on an Ascend host before trusting it.
 */
#include <gflags/gflags.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/status.h"
#include "include/api/types.h"
#ifdef TINYBERT_USE_GRAPH_CELL
#include "include/api/serialization.h"
#endif
#include "inc/utils.h"

DEFINE_string(mindir_path, "", "MindIR file written by export.py (fixed batch size recommended)");
DEFINE_string(input0_path, "", "folder of input_ids .bin files (preprocess.py: 00_input_ids)");
DEFINE_string(input1_path, "", "folder of token_type_ids .bin files (preprocess.py: 01_token_type_ids)");
DEFINE_string(input2_path, "", "folder of attention_mask .bin files (preprocess.py: 02_attention_mask)");
DEFINE_string(result_path, "./result_Files", "folder for the output .bin files");
DEFINE_string(time_file, "./time_Result/test_perform_static.txt", "file for the mean latency line");
DEFINE_int32(device_id, 0, "Ascend device id");
// preferred_fp32 keeps the float32 accuracy of the exported model (the model zoo ran allow_fp32_to_fp16, which
// computes float32 operators in float16 where the hardware prefers it and loses accuracy on the attention scores).
DEFINE_string(precision_mode, "preferred_fp32",
              "Ascend precision mode: preferred_fp32 (default: float32 accuracy), allow_fp32_to_fp16 (the model zoo's "
              "choice), force_fp16, must_keep_origin_dtype, allow_mix_precision");
DEFINE_string(op_select_impl_mode, "high_precision", "high_precision or high_performance");

namespace {

constexpr size_t kNumInputs = 3;
const char *const kInputNames[kNumInputs] = {"input_ids", "token_type_ids", "attention_mask"};

int Fail(const std::string &message) {
  std::cerr << "ERROR: " << message << std::endl;
  return 1;
}

std::shared_ptr<mindspore::Context> MakeContext() {
  auto context = std::make_shared<mindspore::Context>();
  auto ascend = std::make_shared<mindspore::AscendDeviceInfo>();
  ascend->SetDeviceID(static_cast<uint32_t>(FLAGS_device_id));
  ascend->SetPrecisionMode(FLAGS_precision_mode);
  ascend->SetOpSelectImplMode(FLAGS_op_select_impl_mode);
  context->MutableDeviceInfo().push_back(ascend);
  return context;
}

mindspore::Status BuildModel(mindspore::Model *model, const std::shared_ptr<mindspore::Context> &context) {
#ifdef TINYBERT_USE_GRAPH_CELL
  mindspore::Graph graph;
  mindspore::Status status = mindspore::Serialization::Load(FLAGS_mindir_path, mindspore::ModelType::kMindIR, &graph);
  if (status != mindspore::kSuccess) {
    return status;
  }
  return model->Build(mindspore::GraphCell(graph), context);
#else
  return model->Build(FLAGS_mindir_path, mindspore::ModelType::kMindIR, context);
#endif
}

bool HasDynamicDim(const std::vector<int64_t> &shape) {
  for (int64_t dim : shape) {
    if (dim < 0) {
      return true;
    }
  }
  return false;
}

int64_t NumElements(const std::vector<int64_t> &shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    count *= dim;
  }
  return count;
}

// The [rows, S] shape of one batch file: the model's static shape, or for a dynamic batch dimension
// (export --dynamic_batch) the number of rows the file holds. Sets `error` if the size does not fit.
bool BatchShape(const mindspore::MSTensor &model_input, size_t bytes, const std::string &file,
                std::vector<int64_t> *shape, std::string *error) {
  *shape = model_input.Shape();
  const size_t item = sizeof(int32_t);
  if (shape->size() != 2 || (*shape)[1] <= 0) {
    *error = "model input " + model_input.Name() + " has shape " + ShapeToString(*shape) +
             "; expected [batch, seq_length] with a fixed seq_length";
    return false;
  }
  size_t row_bytes = static_cast<size_t>((*shape)[1]) * item;
  if (HasDynamicDim(*shape)) {
    if (bytes == 0 || bytes % row_bytes != 0) {
      *error = file + ": " + std::to_string(bytes) + " bytes is not a whole number of int32 rows of length " +
               std::to_string((*shape)[1]) + " (" + std::to_string(row_bytes) + " bytes per row)";
      return false;
    }
    (*shape)[0] = static_cast<int64_t>(bytes / row_bytes);
    return true;
  }
  size_t expected = static_cast<size_t>(NumElements(*shape)) * item;
  if (bytes != expected) {
    *error = file + ": " + std::to_string(bytes) + " bytes; model input " + model_input.Name() + " " +
             ShapeToString(*shape) + " int32 expects " + std::to_string(expected) +
             " bytes (preprocess.py --batch_size/--seq_length must match the export)";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (RealPath(FLAGS_mindir_path).empty()) {
    return Fail("--mindir_path '" + FLAGS_mindir_path + "' does not exist");
  }
  const std::string input_dirs[kNumInputs] = {FLAGS_input0_path, FLAGS_input1_path, FLAGS_input2_path};
  std::vector<std::string> names[kNumInputs];
  std::string error;
  for (size_t k = 0; k < kNumInputs; ++k) {
    if (input_dirs[k].empty() || !ListBinFiles(input_dirs[k], &names[k], &error)) {
      return Fail("--input" + std::to_string(k) + "_path (" + kInputNames[k] + "): " +
                  (input_dirs[k].empty() ? std::string("not given") : error));
    }
    if (names[k].empty()) {
      return Fail("--input" + std::to_string(k) + "_path " + input_dirs[k] + " holds no .bin files");
    }
    if (k > 0 && names[k] != names[0]) {
      return Fail(input_dirs[k] + " and " + input_dirs[0] +
                  " hold different .bin file names; run preprocess.py again into an empty folder");
    }
  }
  if (!MakeDirs(FLAGS_result_path, &error)) {
    return Fail(error);
  }

  mindspore::Model model;
  mindspore::Status status = BuildModel(&model, MakeContext());
  if (status != mindspore::kSuccess) {
    return Fail("building " + FLAGS_mindir_path + " on Ascend device " + std::to_string(FLAGS_device_id) +
                " failed: " + status.ToString());
  }
  std::vector<mindspore::MSTensor> model_inputs = model.GetInputs();
  if (model_inputs.size() != kNumInputs) {
    return Fail(FLAGS_mindir_path + " has " + std::to_string(model_inputs.size()) +
                " inputs; expected 3 (input_ids, token_type_ids, attention_mask) as export.py writes");
  }
  for (size_t k = 0; k < kNumInputs; ++k) {
    if (model_inputs[k].DataType() != mindspore::DataType::kNumberTypeInt32) {
      return Fail("model input " + std::to_string(k) + " (" + model_inputs[k].Name() +
                  ") is not int32; the .bin files hold int32");
    }
  }

  std::vector<double> latencies_ms;
  std::vector<int64_t> current_rows(kNumInputs, -1);
  for (size_t i = 0; i < names[0].size(); ++i) {
    const std::string &name = names[0][i];
    std::vector<std::vector<uint8_t>> buffers(kNumInputs);
    std::vector<std::vector<int64_t>> shapes(kNumInputs);
    for (size_t k = 0; k < kNumInputs; ++k) {
      std::string path = input_dirs[k] + "/" + name;
      if (!ReadBinaryFile(path, &buffers[k], &error) ||
          !BatchShape(model_inputs[k], buffers[k].size(), path, &shapes[k], &error)) {
        return Fail(error);
      }
    }
    if (HasDynamicDim(model_inputs[0].Shape()) && shapes[0][0] != current_rows[0]) {
      // Dynamic batch dimension: resize once per distinct row count (preprocess.py pads every batch to B,
      // so this normally happens once).
      if (model.Resize(model.GetInputs(), shapes) != mindspore::kSuccess) {
        return Fail("Model::Resize to " + ShapeToString(shapes[0]) + " failed for " + name);
      }
      current_rows.assign(kNumInputs, shapes[0][0]);
    }
    std::vector<mindspore::MSTensor> inputs;
    for (size_t k = 0; k < kNumInputs; ++k) {
      // The buffers outlive Predict(); the tensors only describe them.
      inputs.emplace_back(model_inputs[k].Name(), mindspore::DataType::kNumberTypeInt32, shapes[k],
                          buffers[k].data(), buffers[k].size());
    }
    std::vector<mindspore::MSTensor> outputs;
    auto start = std::chrono::steady_clock::now();
    status = model.Predict(inputs, &outputs);
    auto end = std::chrono::steady_clock::now();
    if (status != mindspore::kSuccess) {
      return Fail("Predict failed for " + name + ": " + status.ToString());
    }
    if (outputs.empty() || outputs[0].DataType() != mindspore::DataType::kNumberTypeFloat32) {
      return Fail("output 0 of " + FLAGS_mindir_path + " is not float32 logits (postprocess.py reads float32)");
    }
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
    if (!WriteOutputs(name, outputs, FLAGS_result_path, &error)) {
      return Fail(error);
    }
    std::cout << "batch " << i << " " << name << ": " << latencies_ms.back() << " ms" << std::endl;
  }

  double total = 0.0;
  for (double ms : latencies_ms) {
    total += ms;
  }
  double average = total / static_cast<double>(latencies_ms.size());
  std::string line = "NN inference cost average time: " + std::to_string(average) + " ms of infer_count " +
                     std::to_string(latencies_ms.size());
  std::cout << line << std::endl;
  size_t slash = FLAGS_time_file.find_last_of('/');
  if (slash != std::string::npos && !MakeDirs(FLAGS_time_file.substr(0, slash), &error)) {
    return Fail(error);
  }
  std::ofstream time_file(FLAGS_time_file, std::ios::trunc);
  time_file << line << std::endl;
  return 0;
}
