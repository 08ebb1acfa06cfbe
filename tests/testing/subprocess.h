// Subprocess: runs a binary with arguments, stdout and stderr captured through pipes, for tests
// that exercise the real executables. Not thread-safe; one thread drives an instance.
// Also: ServerAddress (a regtopk-server subprocess's address) and NewTempDir.
#ifndef REGTOPK_TESTS_TESTING_SUBPROCESS_H_
#define REGTOPK_TESTS_TESTING_SUBPROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace regtopk {

class Subprocess {
 public:
  // `env`: NAME=VALUE entries added to (or replacing in) the child's inherited environment.
  Subprocess(const std::string& binary, const std::vector<std::string>& args,
             const std::vector<std::string>& env = {}) {
    int out[2], err[2];
    if (pipe(out) != 0 || pipe(err) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);  // its own process group, so that cleanup reaches its children too
      dup2(out[1], 1);
      dup2(err[1], 2);
      close(out[0]);
      close(err[0]);
      for (const std::string& e : env) putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(binary.c_str()));
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    out_fd_ = out[0];
    err_fd_ = err[0];
  }
  ~Subprocess() {
    if (pid_ > 0 && !exited_) {
      kill(-pid_, SIGKILL);
      Wait();
    } else if (pid_ > 0) {
      kill(-pid_, SIGKILL);  // anything the process left behind in its group
    }
    if (out_fd_ >= 0) close(out_fd_);
    if (err_fd_ >= 0) close(err_fd_);
  }

  // Reads stdout (stderr) until it holds `needle` or `timeout_ms` passes; returns whether it
  // does.
  bool WaitForStdout(const std::string& needle, int timeout_ms) {
    return WaitFor(out_fd_, &stdout_, needle, timeout_ms);
  }
  bool WaitForStderr(const std::string& needle, int timeout_ms) {
    return WaitFor(err_fd_, &stderr_, needle, timeout_ms);
  }

  void Signal(int sig) { kill(pid_, sig); }
  pid_t pid() const { return pid_; }

  // Waits for exit, draining both pipes; returns the exit code, or 128 + signal. A process that
  // has not exited after `timeout_ms` is a test failure: it is killed (SIGKILL, with its process
  // group) and reaped, so no wait is unbounded.
  int Wait(int timeout_ms = 300000) {
    if (exited_) return code_;
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    // Keep draining both pipes while waiting, so a chatty child never blocks on a full pipe.
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > end) {
        ADD_FAILURE() << "process " << pid_ << " did not exit within " << timeout_ms
                      << " ms; killed";
        kill(-pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      const bool got = ReadSome(out_fd_, &stdout_, 20);
      if (!ReadSome(err_fd_, &stderr_, 20) && !got) usleep(1000);
    }
    while (ReadSome(out_fd_, &stdout_, 100)) {
    }
    while (ReadSome(err_fd_, &stderr_, 100)) {
    }
    exited_ = true;
    code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return code_;
  }

  const std::string& stdout_text() const { return stdout_; }
  const std::string& stderr_text() const { return stderr_; }

 private:
  static bool WaitFor(int fd, std::string* text, const std::string& needle, int timeout_ms) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (text->find(needle) == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            end - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0 || !ReadSome(fd, text, static_cast<int>(left))) return false;
    }
    return true;
  }

  // Appends what is available within `timeout_ms`; false on EOF or timeout.
  static bool ReadSome(int fd, std::string* into, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    into->append(buf, n);
    return true;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  bool exited_ = false;
  int code_ = -1;
  std::string stdout_, stderr_;
};

// Waits for a regtopk-server subprocess to print "listening on HOST:PORT" and returns
// "127.0.0.1:PORT", or "" if it did not within 20 s.
inline std::string ServerAddress(Subprocess& server) {
  if (!server.WaitForStdout("listening on", 20000) || !server.WaitForStdout("\n", 1000)) return "";
  std::smatch m;
  const std::string out = server.stdout_text();
  if (!std::regex_search(out, m, std::regex("listening on [0-9.]+:([0-9]+)"))) return "";
  return "127.0.0.1:" + m[1].str();
}

// A new empty folder under the test's temporary directory, unique within the process.
inline std::string NewTempDir(const std::string& prefix) {
  static int counter = 0;
  const std::string dir = ::testing::TempDir() + "/" + prefix + "_" + std::to_string(getpid()) +
                          "_" + std::to_string(counter++);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace regtopk

#endif  // REGTOPK_TESTS_TESTING_SUBPROCESS_H_
