/**
 * File helpers of the TinyBERT Ascend 310 runner; see inc/utils.h.
 *
 * Not compiled on the development machines of this project (no Ascend toolkit there).
 */
#include "inc/utils.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <fstream>
#include <sstream>

std::string RealPath(const std::string &path) {
  char resolved[PATH_MAX] = {0};
  if (path.empty() || realpath(path.c_str(), resolved) == nullptr) {
    return "";
  }
  return std::string(resolved);
}

std::string BaseName(const std::string &path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

static bool EndsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool ListBinFiles(const std::string &dir, std::vector<std::string> *names, std::string *error) {
  names->clear();
  DIR *handle = opendir(dir.c_str());
  if (handle == nullptr) {
    *error = "cannot open folder " + dir + ": " + strerror(errno);
    return false;
  }
  for (struct dirent *entry = readdir(handle); entry != nullptr; entry = readdir(handle)) {
    std::string name(entry->d_name);
    if (!EndsWith(name, ".bin")) {
      continue;
    }
    struct stat info;
    std::string path = dir + "/" + name;
    if (stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode)) {
      names->push_back(name);
    }
  }
  closedir(handle);
  std::sort(names->begin(), names->end());
  return true;
}

bool ReadBinaryFile(const std::string &path, std::vector<uint8_t> *buffer, std::string *error) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file.is_open()) {
    *error = "cannot open " + path;
    return false;
  }
  std::streamsize size = file.tellg();
  if (size < 0) {
    *error = "cannot get the size of " + path;
    return false;
  }
  file.seekg(0, std::ios::beg);
  buffer->resize(static_cast<size_t>(size));
  if (size > 0 && !file.read(reinterpret_cast<char *>(buffer->data()), size)) {
    *error = "cannot read " + path;
    return false;
  }
  return true;
}

bool MakeDirs(const std::string &dir, std::string *error) {
  if (dir.empty()) {
    return true;
  }
  std::string partial;
  std::stringstream parts(dir);
  std::string part;
  if (dir[0] == '/') {
    partial = "/";
  }
  while (std::getline(parts, part, '/')) {
    if (part.empty()) {
      continue;
    }
    partial += part + "/";
    if (mkdir(partial.c_str(), 0750) != 0 && errno != EEXIST) {
      *error = "cannot create folder " + partial + ": " + strerror(errno);
      return false;
    }
  }
  return true;
}

bool WriteOutputs(const std::string &input_name, const std::vector<mindspore::MSTensor> &outputs,
                  const std::string &result_dir, std::string *error) {
  std::string stem = EndsWith(input_name, ".bin") ? input_name.substr(0, input_name.size() - 4) : input_name;
  for (size_t k = 0; k < outputs.size(); ++k) {
    std::string path = result_dir + "/" + stem + "_" + std::to_string(k) + ".bin";
    std::shared_ptr<const void> data = outputs[k].Data();
    if (data == nullptr) {
      *error = "output " + std::to_string(k) + " has no host data";
      return false;
    }
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    if (!file.is_open()) {
      *error = "cannot write " + path;
      return false;
    }
    file.write(static_cast<const char *>(data.get()), static_cast<std::streamsize>(outputs[k].DataSize()));
    if (!file) {
      *error = "write failed for " + path;
      return false;
    }
  }
  return true;
}

std::string ShapeToString(const std::vector<int64_t> &shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return text + "]";
}
