"""The judge (utils.py): extraction, comparison, rewards, and a batch of hostile programs.

The hostile programs are judged together in one parallel batch (module fixture) so the file stays fast;
each test then checks its own verdict, and every one of them checks that the batch left no process and no
temporary file behind.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import utils
from conftest import ROOT, SHARED_REALDATA
from utils import JudgeConfig, JudgeResult, Verdict

ESCAPES = [Path(tempfile.gettempdir(), "tinylora_escape_probe"), Path("/var/tmp/tinylora_escape_probe"),
           Path("/dev/shm/tinylora_escape_probe"), ROOT / "tinylora_escape_probe",
           Path.home() / "tinylora_escape_probe"]
AB = "1 2\n"
HEAD = "#include <bits/stdc++.h>\nusing namespace std;\n"
CHECKOUT_FILE = ROOT / "data" / "sample" / "test.jsonl"       # every expected output of the shipped test split
HOME_FILE = Path.home() / "tinylora_judge_home_probe.txt"     # created world-readable by the fixture
READ_BOTH = "".join(f'{{ifstream f("{p}"); string s; cout<<(getline(f,s)? "read" : "none")<<endl;}}'
                    for p in (CHECKOUT_FILE, HOME_FILE))

PROGRAMS = {  # name -> (source, input, expected output)
    "correct": (HEAD + "int main(){long long a,b;cin>>a>>b;cout<<a+b<<'\\n';}", AB, "3"),
    "wrong": (HEAD + "int main(){long long a,b;cin>>a>>b;cout<<a-b<<'\\n';}", AB, "3"),
    "spin": (HEAD + "int main(){volatile long x=0; for(;;) x++;}", AB, "3"),
    # spins in the kernel: system time that page faults do not explain is charged
    "syscall_spin": (HEAD + "#include <unistd.h>\nint main(){ for(;;) getppid(); }", AB, "3"),
    # maps, touches and unmaps 1 MiB forever: its faults are never charged, so the user + sys backstop stops it
    "fault_forever": (HEAD + "#include <sys/mman.h>\nint main(){ for(;;){ char* p=(char*)mmap(nullptr, 1<<20,"
                      " PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0); memset(p, 1, 1<<20);"
                      " munmap(p, 1<<20); } }", AB, "3"),
    "sleep": (HEAD + "#include <unistd.h>\nint main(){sleep(30); cout<<3;}", AB, "3"),
    "bad_alloc": (HEAD + "int main(){vector<char> v(3000000000ULL); v[5]=1; cout<<(int)v[5];}", AB, "1"),
    "memory_hog": (HEAD + "int main(){vector<vector<char>> v; for(;;) v.emplace_back(1<<24, 'x');}", AB, "3"),
    "abort": (HEAD + "int main(){abort();}", AB, "3"),
    "segfault": (HEAD + "int main(){volatile int* p=nullptr; *p=1; cout<<3;}", AB, "3"),
    "return1": (HEAD + "int main(){cout<<3<<endl; return 1;}", AB, "3"),
    "endless_output": (HEAD + "int main(){for(;;) cout<<\"yes yes yes yes\\n\";}", AB, "3"),
    "fork_bomb": ("#include <unistd.h>\nint main(){for(;;) fork();}", AB, "3"),
    "double_fork": (HEAD + "#include <unistd.h>\nint main(){ if(fork()==0){ setsid(); if(fork()==0){ sleep(3);"
                    " FILE*f=fopen(\"" + str(ESCAPES[0]) + "\",\"w\"); for(;;); } return 0; } cout<<3<<endl; }",
                    AB, "3"),
    "write_outside": (HEAD + "int main(){ const char* p[]={" + ",".join(f'"{e}"' for e in ESCAPES) + "};"
                      " int made=0; for(auto s:p){FILE*f=fopen(s,\"w\"); if(f){fputs(\"x\",f);fclose(f);made++;}}"
                      " FILE*w=fopen(\"inside.txt\",\"w\"); cerr<<made; cout<<(w?3:0)<<endl; }", AB, "3"),
    "env_secret": (HEAD + "extern char** environ;\nint main(){const char* s=getenv(\"TINYLORA_SECRET\");"
                   " int n=0; while(environ[n]) n++; cout<<(s?s:\"absent\")<<' '<<n<<endl;}", AB, "absent 0"),
    "network": (HEAD + "#include <arpa/inet.h>\n#include <sys/socket.h>\nint main(){int port; cin>>port;"
                " int s=socket(AF_INET,SOCK_STREAM,0); sockaddr_in a{}; a.sin_family=AF_INET; a.sin_port=htons(port);"
                " a.sin_addr.s_addr=htonl(INADDR_LOOPBACK);"
                " cout<<(connect(s,(sockaddr*)&a,sizeof a)==0?\"connected\":\"blocked\")<<endl;}", None, "blocked"),
    "dev_zero": ("#include </dev/zero>\nint main(){}", AB, "3"),
    "deep_recursion": (HEAD + "int d(int n, vector<int>& seen){ if(n==0) return 0; seen[n]=n; int r=d(n-1,seen);"
                       " return r + (seen[n]&1); }\nint main(){ int n=1000000; vector<int> s(n+1);"
                       " cout<<d(n,s)<<endl; }", AB, "500000"),
    "non_utf8": (HEAD + "int main(){ cout<<\"\\xff\\xfe 3\\n\"; }", AB, "\u00ff 3"),
    "crlf_expected": (HEAD + "int main(){ cout<<\"1 2\\n3\\n\"; }", AB, "1 2\r\n3\r\n"),
    "read_user_files": (HEAD + "int main()" + "{" + READ_BOTH + "}", AB, "none none"),
    "incbin_checkout": (f'asm(".incbin \\"{CHECKOUT_FILE}\\"");\nint main(){{}}', AB, ""),
    "incbin_home": (f'asm(".incbin \\"{HOME_FILE}\\"");\nint main(){{}}', AB, ""),
    "include_checkout": (f'#include "{ROOT / "utils.py"}"\nint main(){{}}', AB, ""),
    "include_home": (f'#include "{HOME_FILE}"\nint main(){{}}', AB, ""),
}

CONFIG = JudgeConfig(time_limit_s=1.0, memory_mb=256, output_limit_bytes=1 << 20)


def _sandbox_processes(before: frozenset[str] = frozenset()) -> list[str]:
    """Live processes running as one of this judge's sandbox uids, or children of this test process that were
    not there `before` (other tests in the session leave helpers such as multiprocessing's resource tracker)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("State", "").startswith("Z"):
            continue  # already dead; reaping orphans is init's job
        uid = int(fields.get("Uid", "0").split()[0])
        if uid in utils.sandbox_uid_window() or fields.get("PPid") == str(os.getpid()):
            found.append(f"{status.parent.name}:{fields.get('Name', '').strip()}")
    return [p for p in found if p not in before]


def _leftovers(before: frozenset[str] = frozenset()) -> list[str]:
    """Everything a judged program might leave behind. World-writable dirs (/tmp, ...) are only protected
    when the kernel gives us a private mount namespace; the repo and $HOME always are."""
    files = [str(p) for p in Path(tempfile.gettempdir()).glob(f"tinylora-judge-{os.getpid()}-*")]
    guarded = ESCAPES if utils.sandbox_features()["private_tmp"] else ESCAPES[3:]
    return _sandbox_processes(before) + files + [str(e) for e in guarded if e.exists()]


@pytest.fixture(scope="module")
def hostile() -> dict:
    """Judge every program in PROGRAMS in one batch; return results, timings and what was left behind."""
    for escape in ESCAPES:
        escape.unlink(missing_ok=True)
    before = frozenset(_sandbox_processes())
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    os.environ["TINYLORA_SECRET"] = "hunter2"
    HOME_FILE.write_text("int leaked = 1;\n")  # valid C++, so only invisibility can make #include fail
    HOME_FILE.chmod(0o644)
    items = [(src, [{"input": f"{port}\n" if inp is None else inp, "output": out}]) for src, inp, out in
             PROGRAMS.values()]
    try:
        start = time.monotonic()
        results = utils.judge_batch(items, CONFIG)
        seconds = time.monotonic() - start
    finally:
        listener.close()
        del os.environ["TINYLORA_SECRET"]
        HOME_FILE.unlink()
    time.sleep(3.5)  # the double-forked daemon would write its file after 3 s if it had survived
    return {"results": dict(zip(PROGRAMS, results)), "seconds": seconds, "leftovers": _leftovers(before)}


@pytest.mark.parametrize("name, expected", [
    ("correct", {Verdict.OK}), ("wrong", {Verdict.WA}), ("spin", {Verdict.TLE}), ("syscall_spin", {Verdict.TLE}),
    ("fault_forever", {Verdict.TLE}),
    ("sleep", {Verdict.TLE}),
    ("bad_alloc", {Verdict.MLE}), ("memory_hog", {Verdict.MLE, Verdict.RE}), ("abort", {Verdict.RE}),
    ("segfault", {Verdict.RE}), ("return1", {Verdict.RE}), ("endless_output", {Verdict.OLE}),
    ("fork_bomb", {Verdict.TLE, Verdict.RE}), ("double_fork", {Verdict.OK}), ("write_outside", {Verdict.OK}),
    ("env_secret", {Verdict.OK}), ("dev_zero", {Verdict.CE}), ("deep_recursion", {Verdict.OK}),
    ("non_utf8", {Verdict.WA}), ("crlf_expected", {Verdict.OK}),
])
def test_hostile_program_verdict_and_nothing_left(hostile, name, expected) -> None:
    result = hostile["results"][name]
    assert result.verdict in expected, result
    assert hostile["leftovers"] == []


@pytest.mark.parametrize("name, expected", [
    ("read_user_files", Verdict.OK), ("incbin_checkout", Verdict.CE), ("incbin_home", Verdict.CE),
    ("include_checkout", Verdict.CE), ("include_home", Verdict.CE)])
def test_programs_and_compiler_see_no_user_files(hostile, name, expected) -> None:
    """With a minimal root, files under the checkout (expected outputs) and $HOME are invisible to the
    program (it reads nothing: OK) and to the compiler (.incbin and #include of them fail: CE)."""
    if not utils.sandbox_features()["minimal_root"]:
        pytest.skip(f"sandbox level {utils.sandbox_features()['level']}: no minimal root on this machine")
    assert CHECKOUT_FILE.exists() and os.stat(CHECKOUT_FILE).st_mode & 0o004  # readable by anyone outside
    assert hostile["results"][name].verdict is expected, hostile["results"][name]
    assert hostile["leftovers"] == []


def test_network_blocked_when_namespaces_available(hostile) -> None:
    if not utils.sandbox_features()["net_namespace"]:
        pytest.skip("no network namespace on this machine")
    assert hostile["results"]["network"].verdict is Verdict.OK
    assert hostile["leftovers"] == []


def test_timeouts_and_compile_limit_are_enforced_promptly(hostile) -> None:
    """A spinning program dies at its CPU limit, a sleeping one at the sleep net (2 x limit + 1 s asleep)."""
    results = hostile["results"]
    safety_net = 2 * CONFIG.time_limit_s + 1.0
    assert results["spin"].run_s < safety_net + 0.5
    assert safety_net - 0.1 < results["sleep"].run_s < safety_net + 0.5
    assert results["dev_zero"].compile_s < CONFIG.compile_timeout_s + 2.0
    assert "dev/zero" not in results["dev_zero"].message or "\0" not in results["dev_zero"].message


def test_partial_pass_counts_tests() -> None:
    before = frozenset(_sandbox_processes())
    code = HEAD + "int main(){long long a,b;cin>>a>>b;cout<<(a>100?0:a+b)<<'\\n';}"
    tests = [{"input": "1 2", "output": "3"}, {"input": "200 1", "output": "201"}, {"input": "2 2", "output": "4"}]
    result = utils.judge_program(code, tests, CONFIG)
    assert (result.passed, result.total, result.verdicts) == (2, 3, [Verdict.OK, Verdict.WA, Verdict.OK])
    assert result.verdict is Verdict.WA
    assert utils.reward_from_result(result) == pytest.approx(0.5 + 0.5 * 2 / 3)
    binary = utils.judge_program(code, tests, JudgeConfig(binary=True))
    assert binary.verdicts == [Verdict.OK, Verdict.WA] and binary.total == 3
    assert _leftovers(before) == []


def test_compile_error_message_never_echoes_other_files() -> None:
    secret = Path(tempfile.mkdtemp()) / "secret.txt"
    secret.write_text("root:x:0:0:TOPSECRET-LINE:/root:/bin/bash\n")
    result = utils.judge_program(f'#include "{secret}"\nint main(){{}}', [{"input": "", "output": ""}])
    assert result.verdict is Verdict.CE and not result.compiled
    assert "TOPSECRET" not in result.message and "root:x" not in result.message
    plain = utils.judge_program("int main(){ return undefined_name; }", [])
    assert "undefined_name" in plain.message and plain.message.startswith("1:")
    secret.unlink()
    secret.parent.rmdir()


def test_compile_cache_hits_and_caches_failures(tmp_path, monkeypatch) -> None:
    source = f"#include <cstdio>\nint main(){{printf(\"%d\", {time.time_ns()}%7);}}"
    bad = f"int main(){{ syntax error {time.time_ns()} }}"
    exe, _, first = utils.compile_program(source)
    again, _, second = utils.compile_program(source)
    assert exe == again and exe.exists() and second < first / 5
    assert utils.compile_program(bad)[0] is None
    assert utils.compile_program(bad)[2] < 0.05
    other_flags = JudgeConfig(cxx_flags=("-O0", "-std=c++17"))
    assert utils.compile_program(source, other_flags)[0] != exe


def test_batch_dedupes_identical_programs_and_keeps_order() -> None:
    before = frozenset(_sandbox_processes())
    code = HEAD + f"int main(){{int x;cin>>x;cout<<x*2;}} // {time.time_ns()}"
    tests = [{"input": "2", "output": "4"}]
    items = [(code, tests), (None, tests), (code, tests), ("int main(){", tests), (code, [{"input": "1", "output": "3"}])]
    results = utils.judge_batch(items, CONFIG)
    assert [r.verdict for r in results] == [Verdict.OK, Verdict.NO_CODE, Verdict.OK, Verdict.CE, Verdict.WA]
    assert results[0] is not results[2] and results[0].verdicts is not results[2].verdicts
    assert _leftovers(before) == []


# --- per-problem settings: limits, compare rules, checkers ---------------------------------------------

def test_problem_judge_config_takes_the_problems_limits_capped_by_run_flags() -> None:
    base = JudgeConfig(time_limit_s=2.0, memory_mb=1024, max_tests=5)
    problem = {"time_limit_s": 3.5, "memory_limit_mb": 512, "compare": "float:1e-06"}
    config = utils.problem_judge_config(problem, base)
    assert (config.time_limit_s, config.memory_mb, config.compare, config.max_tests) == (3.5, 512, "float:1e-06", 5)
    capped = utils.problem_judge_config(problem, base, max_time_limit_s=2.0, max_memory_mb=256)
    assert (capped.time_limit_s, capped.memory_mb) == (2.0, 256)
    absent = utils.problem_judge_config({"time_limit_s": None, "memory_limit_mb": None}, base)
    assert absent == base
    with pytest.raises(ValueError, match="compare"):
        utils.problem_judge_config({"compare": "float:abc"}, base)


def test_judge_batch_per_item_configs_apply_each_problems_time_limit() -> None:
    """The same 0.3 s-CPU program is TLE under a 0.2 s problem and OK under a 1 s one and under the batch's
    default, in one batch."""
    before = frozenset(_sandbox_processes())
    code = HEAD + f"#include <ctime>\nint main(){{ while (clock() < 0.3 * CLOCKS_PER_SEC) {{}} cout<<1; }} // {time.time_ns()}"
    tests = [{"input": "", "output": "1"}]
    base = JudgeConfig()
    items = [(code, tests, utils.problem_judge_config({"time_limit_s": limit}, base)) for limit in (0.2, 1.0)]
    assert [r.verdict for r in utils.judge_batch(items + [(code, tests)], base)] == [Verdict.TLE, Verdict.OK, Verdict.OK]
    assert _leftovers(before) == []


def _realdata_rows(path: str) -> list[dict]:
    return json.loads((SHARED_REALDATA / path).read_text())


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_REALDATA.exists(), reason="../shared/realdata not present")
def test_float_and_nocase_compares_on_real_statements() -> None:
    """Real problems: code_contests' "absolute or relative error does not exceed 10^{-4}", LiveCodeBench's
    10^{-6}, and a Codeforces "YES and NO in any case" statement. A program printing the expected answers
    reformatted (more digits, within the tolerance; lower case) is OK under the problem's rule and WA under
    plain tokens; one off by more than the tolerance is WA."""
    float4 = _realdata_rows("code_contests/rllm_code_contests_test.json")[1]
    float6 = _realdata_rows("lcb_deepcoder/rllm_livecodebench_test_279.json")[115]
    yes_no = _realdata_rows("lcb_deepcoder/rllm_codeforces_test_408.json")[2]
    assert "absolute or relative error does not exceed 10^{-4}" in float4["problem"]
    assert "does not exceed 10^{-6}" in float6["problem"]
    assert '"YES" and "NO" in any case' in yes_no["problem"]
    cases = [  # (tests, compare rule, transform of the expected output that the rule must accept, one it must not)
        ([{"input": i, "output": o} for i, o in zip(float4["tests"]["inputs"], float4["tests"]["outputs"])][:3],
         "float:1e-4", lambda x: f"{x * (1 + 5e-5):.12f}", lambda x: f"{x * (1 + 1e-3) + 1e-3:.12f}"),
        (float6["tests"][:3], "float:1e-6", lambda x: f"{x * (1 - 5e-7):.15g}", lambda x: f"{x * (1 + 1e-5):.15g}"),
        (yes_no["tests"][:1], "tokens_nocase", str.lower, lambda s: s.replace("YES", "NO", 1).lower()),
    ]
    items = []
    for tests, rule, good, bad in cases:
        for transform in (good, bad):
            for test in tests:
                numeric = rule.startswith("float")
                tokens = [transform(float(t)) if numeric else transform(t) for t in test["output"].split()]
                printed = " ".join(tokens) if numeric else transform(test["output"])
                program = HEAD + f"int main(){{ cout << R\"({printed})\"; }} // {time.time_ns()}"
                for config in (utils.problem_judge_config({"compare": rule}, CONFIG), CONFIG):
                    items.append((program, [test], config))
    before = frozenset(_sandbox_processes())
    verdicts = [r.verdict for r in utils.judge_batch(items, CONFIG)]
    expected = []
    for tests, *_ in cases:  # per test: good under the rule OK, good under tokens WA, bad under both WA
        expected += [Verdict.OK, Verdict.WA] * len(tests) + [Verdict.WA, Verdict.WA] * len(tests)
    assert verdicts == expected
    assert _leftovers(before) == []


def test_checker_accepts_a_different_valid_answer_and_rejects_a_wrong_one() -> None:
    """The shipped any_divisor problem: its reference prints the smallest divisor; the largest proper divisor
    is just as right (OK through the checker, WA by token comparison); a non-divisor and a false "prime" are WA."""
    import data

    problem = next(p for p in data.load_problems("sample", "test") if p["id"] == "sample/any_divisor")
    config = utils.problem_judge_config(problem, JudgeConfig(max_tests=100))
    assert config.checker and "argv" in config.checker
    largest = HEAD + "int main(){ long long n; cin>>n; for(long long d=2; d*d<=n; d++) if(n%d==0){ cout<<n/d; return 0; }" \
                     " cout<<-1; }"
    not_divisor = HEAD + "int main(){ long long n; cin>>n; cout<<(n>3 ? n-1 : -1); }"
    always_prime = HEAD + "int main(){ cout<<-1; }"
    tests = data.all_tests(problem)
    before = frozenset(_sandbox_processes())
    results = utils.judge_batch([(largest, tests, config), (largest, tests), (not_divisor, tests, config),
                                 (always_prime, tests, config)], JudgeConfig(max_tests=100))
    assert [r.verdict for r in results] == [Verdict.OK, Verdict.WA, Verdict.WA, Verdict.WA]
    assert results[0].passed == len(tests) and 0 < results[3].passed < len(tests)  # -1 is right for primes only
    assert _leftovers(before) == []


def test_a_checker_that_does_not_compile_is_a_data_error() -> None:
    config = JudgeConfig(checker="int main( { broken")
    with pytest.raises(ValueError, match="checker does not compile"):
        utils.judge_batch([(HEAD + "int main(){}", [{"input": "", "output": ""}], config)])


# --- pure functions -------------------------------------------------------------------------------------

def test_extract_code_prefers_last_complete_block_with_main() -> None:
    text = ("<think>```cpp\nint main(){return 7;}\n```</think>Sketch:\n```cpp\nint helper();\n```\n"
            "Final:\n```c++\n#include <cstdio>\nint main(){ freopen(\"in.txt\", \"r\", stdin); }\n```\n"
            "Example:\n```\n1 2\n```\n")
    assert utils.extract_code(text) == "#include <cstdio>\nint main(){ stdin; }"
    assert utils.extract_code("```cc\nint main(){}\n```") == "int main(){}"
    assert utils.extract_code("```python\nprint(1)\n```") is None
    assert utils.extract_code("I cannot solve this.") is None
    assert utils.extract_code("Here:\n#include <iostream>\nint main(){}") == "#include <iostream>\nint main(){}"
    assert utils.extract_code("```cpp\nint f();\n```") == "int f();"


def test_extract_code_truncated_fence_is_judged_as_written() -> None:
    truncated = "Here is my solution:\n```cpp\n#include <iostream>\nint main() {\n  int n; std::cin >> n;"
    assert utils.extract_code(truncated) == "#include <iostream>\nint main() {\n  int n; std::cin >> n;"
    finished_then_cut = "```cpp\nint main(){}\n```\nAlternative:\n```cpp\nint main() { for(;;"
    assert utils.extract_code(finished_then_cut) == "int main(){}"
    assert utils.extract_code("<think>I will write ```cpp\nint main(){}") is None


# Patterns seen in SmolLM2-135M-Instruct completions (issue 19: 2 of 96 came out as code still holding a fence).
# No SmolLM2 completion is stored in ../shared/realdata yet, so these reproduce the reported shapes verbatim.
GLUED_FENCE_COMPLETIONS = [
    ("Here is the solution:\n\n```#include <iostream>\nusing namespace std;\n\nint main() {\n    int a, b;\n"
     "    cin >> a >> b;\n    cout << a + b << endl;\n    return 0;\n}\n```\n\nThis program reads two numbers.",
     "#include <iostream>\nusing namespace std;\n\nint main() {\n    int a, b;\n    cin >> a >> b;\n"
     "    cout << a + b << endl;\n    return 0;\n}"),
    ("```cpp #include <bits/stdc++.h>\nint main() { int n; std::cin >> n; std::cout << n * n; }\n```\n"
     "Explanation: we square n.",
     "#include <bits/stdc++.h>\nint main() { int n; std::cin >> n; std::cout << n * n; }"),
    ("Solution:\n```\n#include <cstdio>\nint main() { puts(\"hi\"); }```\nDone.",
     "#include <cstdio>\nint main() { puts(\"hi\"); }"),
]


@pytest.mark.parametrize("completion, code", GLUED_FENCE_COMPLETIONS)
def test_extract_code_with_code_glued_to_a_fence(completion, code) -> None:
    assert utils.extract_code(completion) == code


SMOLLM2_COMPLETIONS = ROOT / "tests" / "fixtures" / "smollm2_completions.jsonl"


def test_extract_code_on_real_smollm2_completions() -> None:
    """24 real SmolLM2-135M-Instruct completions from docs/experiments.md's base run (temperature 0.8, 256 tokens,
    truncated ones included): a program is found whenever the completion has an #include or a cpp fence, and no
    fence ever reaches the compiler (the "stray '`'" CE the issue saw)."""
    rows = [json.loads(line) for line in SMOLLM2_COMPLETIONS.read_text().splitlines()]
    assert len(rows) == 24
    for row in rows:
        code, text = utils.extract_code(row["completion"]), row["completion"]
        assert code is None or "```" not in code, row["id"]
        if "#include" in text or "```cpp" in text:
            assert code, row["id"]
        if row["verdict"] == "NO_CODE":
            assert code is None, row["id"]


def test_include_fallback_stops_at_a_closing_fence() -> None:
    code = "#include <iostream>\nint main() { return 0; }"
    assert utils.extract_code(f"Try this:\n{code}\n```\nIt prints nothing.") == code  # stray closing fence
    assert utils.extract_code(f"Try this:\n{code}\n```\nIt prints nothing.\n```") == code
    assert utils.extract_code(f"Try this: {code}\n```\nIt prints nothing.") == code  # fallback from #include


def test_outputs_match_modes() -> None:
    assert utils.outputs_match(b"1  2\n3\n\n", "1 2\r\n3")
    assert not utils.outputs_match(b"1 2 3", "1 23")
    assert utils.outputs_match(b"a b\n", "a b\r\n", "exact")
    assert not utils.outputs_match(b"a  b\n", "a b", "exact")
    assert utils.outputs_match(b"0.3333333 2", "0.333333333 2", "float")
    assert utils.outputs_match(b"1000000.5", "1000000.0000001", "float")  # relative 1e-6
    assert not utils.outputs_match(b"0.34", "0.333", "float")
    assert not utils.outputs_match(b"1000000001", "1000000000", "float")  # integers exact
    assert utils.outputs_match(b"\xff\xfe", "\udcff\udcfe")  # non-UTF-8 bytes are compared, not decoded
    assert not utils.outputs_match(b"\xff", "\u00ff")
    assert utils.outputs_match(b"yes\nNo", "YES\nNO", "tokens_nocase") and not utils.outputs_match(b"yes", "YES")
    assert not utils.outputs_match(b"yes no", "YES", "tokens_nocase")
    assert utils.outputs_match(b"0.3334", "0.3333", "float:1e-3") and not utils.outputs_match(b"0.3334", "0.3333")
    assert not utils.outputs_match(b"7 x", "7 X", "float:1e-3")  # words stay exact
    for bad in ("fuzzy", "float:", "float:-1", "float:nan"):
        with pytest.raises(ValueError):
            utils.outputs_match(b"", "", bad)


def test_reward_schemes_and_multipliers() -> None:
    def result(verdict, passed=0, total=4, compiled=True):
        return JudgeResult(compiled, [], passed, total, verdict)

    assert utils.reward_from_result(result(Verdict.NO_CODE, compiled=False)) == 0.0
    assert utils.reward_from_result(result(Verdict.NO_CODE, compiled=False), no_code_penalty=0.2) == -0.2
    assert utils.reward_from_result(result(Verdict.CE, compiled=False)) == 0.0
    assert utils.reward_from_result(result(Verdict.WA, 0)) == 0.5
    assert utils.reward_from_result(result(Verdict.WA, 1)) == 0.625
    assert utils.reward_from_result(result(Verdict.OK, 4)) == 1.0
    assert utils.reward_from_result(result(Verdict.OK, 4), multiplier=1.1) == pytest.approx(1.1)
    assert utils.reward_from_result(result(Verdict.WA, 3), "binary") == 0.0
    assert utils.reward_from_result(result(Verdict.OK, 4), "binary") == 1.0
    assert utils.difficulty_multiplier("CODEFORCES", "B") == 1.1
    assert utils.difficulty_multiplier("atcoder", "a") == 1.0
    assert utils.difficulty_multiplier("LEETCODE", "EASY") == 1.0


def test_select_tests_first_and_longest() -> None:
    tests = [{"input": "x" * n, "output": str(n)} for n in (3, 9, 1, 7)]
    assert utils.select_tests(tests, 2, "first") == tests[:2]
    assert utils.select_tests(tests, 2, "longest") == [tests[1], tests[3]]
    assert utils.select_tests(tests, 0, "first") == tests
    with pytest.raises(ValueError):
        utils.select_tests(tests, 2, "random")


def test_code_reward_trl_signature_and_stats() -> None:
    reward = utils.CodeReward(CONFIG)
    ok = "```cpp\n" + HEAD + "int main(){int a,b;cin>>a>>b;cout<<a+b;}\n```"
    tests = [{"input": "1 2", "output": "3"}]
    metrics = {}
    rewards = reward(
        prompts=["p"] * 3, completions=[[{"role": "assistant", "content": ok}], "no code here", ok],
        tests=[tests, tests, tests],
        source=["CODEFORCES", "CODEFORCES", "ATCODER"], difficulty=["B", "B", "A"],
        log_metric=lambda name, value: metrics.__setitem__(name, value))
    assert rewards == [pytest.approx(1.1), 0.0, 1.0]
    assert reward.last_stats["verdicts"]["OK"] == 2 and reward.last_stats["verdicts"]["NO_CODE"] == 1
    assert reward.last_stats["no_code_rate"] == pytest.approx(1 / 3)
    assert metrics["judge/OK"] == pytest.approx(2 / 3)
    with pytest.raises(TypeError, match="data.all_tests"):  # a record's grouped tests are flattened by the caller
        reward(prompts=["p"], completions=[ok], tests=[{"public": tests, "private": [], "generated": []}])
    binary = utils.CodeReward(CONFIG, scheme="binary", no_code_penalty=0.5)
    assert binary(["p"], ["nothing"], [tests]) == [-0.5] and binary.judge.binary
    assert reward.last_stats["verdicts"]["OK"] == 2  # each object keeps its own statistics: no shared state
    assert reward.__name__ == "code_reward"  # the name TRL logs the reward under


def test_code_reward_judges_each_row_under_its_problem_settings() -> None:
    """Training rows carry the record's compare rule and limits: the same "yes" is OK for a problem that accepts
    any case and WA for one that does not, and a row's own time limit decides TLE."""
    yes = "```cpp\n" + HEAD + "int main(){cout<<\"yes\";}\n```"
    spin = "```cpp\n" + HEAD + "int main(){volatile long x=0; for(;;) x++;}\n```"
    tests = [{"input": "", "output": "YES"}]
    reward = utils.CodeReward(CONFIG)
    rewards = reward(prompts=["p"] * 3, completions=[yes, yes, spin], tests=[tests] * 3,
                     compare=["tokens_nocase", None, None], time_limit_s=[None, None, 0.2],
                     memory_limit_mb=[None] * 3, checker=[None] * 3)
    assert rewards == [1.0, 0.5, 0.5]
    assert reward.last_stats["verdicts"]["TLE"] == 1 and reward.last_stats["verdicts"]["WA"] == 1


def test_code_reward_refuses_missing_tests_and_unknown_schemes() -> None:
    with pytest.raises(RuntimeError, match="did not receive the `tests` column"):
        utils.CodeReward(CONFIG)(["p"], ["c"])
    with pytest.raises(ValueError, match="unknown reward scheme 'partial'"):
        utils.CodeReward(CONFIG, scheme="partial")


def test_sandbox_features_reports_booleans_and_a_level() -> None:
    features = utils.sandbox_features()
    assert set(features) >= {"pid_namespace", "net_namespace", "private_tmp", "private_uid", "minimal_root", "level"}
    assert all(isinstance(v, bool) for k, v in features.items() if k != "level")
    assert features["level"] in utils.SANDBOX_LEVELS
    assert (features["level"] == "minimal_root") == features["minimal_root"]


# --- real model generations -----------------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_REALDATA.exists(), reason="../shared/realdata not present")
def test_extract_code_on_real_qwen_generations() -> None:
    outputs = SHARED_REALDATA / "model_outputs"
    chat = [json.loads(line) for line in (outputs / "qwen2_chat_multiple_humaneval_cpp_generations.jsonl").open()]
    for row in chat:  # every chat generation is one ```cpp block: extraction returns exactly its body
        body = row["generation"].split("```cpp", 1)[1].rsplit("```", 1)[0].strip()
        assert utils.extract_code(row["generation"]) == utils._FREOPEN.sub(r"\1", body)
    base = [json.loads(line) for line in (outputs / "qwen2.5-coder-7b-base_multiple_humaneval_cpp_pred.jsonl").open()]
    extracted = [utils.extract_code(row["generation"]) for row in base]  # raw code, no fences: from #include
    assert all(code and code.startswith("#include") for code in extracted)


def test_utils_imports_without_torch() -> None:
    """Worker processes and the benchmark import utils; it must stay light (no torch at import time)."""
    code = "import sys, utils; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_benchmark_quick_runs_and_agrees_with_seed_style() -> None:
    bench = [sys.executable, "-m", "bench.bench_judge"]
    run = subprocess.run([*bench, "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "programs/s" in run.stdout and "speedup:" in run.stdout
    bad = subprocess.run([*bench, "--tests", "0"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "must be positive" in bad.stderr


def test_a_large_judging_process_does_not_turn_crashes_into_mle() -> None:
    """A forked child's ru_maxrss starts at its parent's resident set: a trainer holding a model must not see
    every crash of a 256 MB-limited program reported as MLE."""
    ballast = bytearray(400 << 20)  # resident: bytearray zero-fills every page
    code = HEAD + f"int main(){{abort();}} // {time.time_ns()}"
    result = utils.judge_program(code, [{"input": "", "output": ""}], CONFIG)
    assert len(ballast) and result.verdict is Verdict.RE


def test_precompiled_headers_are_built_once_when_threads_ask_together_and_a_failure_is_not_retried(
        tmp_path, monkeypatch):
    """The header cache is one `paths.built_once` entry: judge threads (and processes) asking at once wait for one
    build; a header that could not be built leaves a marker and is never rebuilt, so a failing compiler costs one
    try per machine, not one per program."""
    import threading

    monkeypatch.setenv("TINYLORA_CACHE", str(tmp_path))
    builds = []

    def fake_build(config, root, header):
        builds.append(header)
        time.sleep(0.3)  # a second thread arrives while the first is still building
        if header == "iostream":
            root.joinpath(header + ".failed").write_text("no")
        else:
            root.joinpath(header + ".gch").write_bytes(b"gch")

    monkeypatch.setattr(utils, "_build_pch", fake_build)
    roots = []
    threads = [threading.Thread(target=lambda: roots.append(utils.precompiled_headers(JudgeConfig())))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(builds) == ["bits/stdc++.h", "iostream"]
    assert len(set(roots)) == 1 and roots[0] is not None and roots[0].joinpath("bits/stdc++.h.gch").exists()
    assert utils.precompiled_headers(JudgeConfig()) == roots[0] and len(builds) == 2
