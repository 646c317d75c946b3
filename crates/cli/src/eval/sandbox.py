# The program `bantam eval --kind code` runs inside its sandbox (see sandbox.rs), as
# `python3 -I -S -c`. It reads one job from stdin, as JSON:
#   {"nonce", "style": "complete"|"evalplus", "prompt", "completion", "test", "entry_point"}
# builds the solution (the prompt and its completion, or the code extracted from a chat
# answer, as EvalPlus sanitises it), then runs the solution and the tests. It writes two
# JSON lines to the stdout it was given: {"nonce", "solution"} before the solution runs and
# {"nonce", "passed", "reason"} after the tests return. Whatever the solution prints goes to
# output.txt in the scratch directory (capped by RLIMIT_FSIZE), never to that stdout.
import ast
import json
import os
import sys


def parses(src):
    try:
        ast.parse(src)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


def longest_valid(text):
    # The longest run of lines (by non-blank lines) that parses as Python: the code of an
    # answer wrapped in prose or in a markdown fence.
    lines = text.split("\n")[:400]
    if parses("\n".join(lines)):
        return "\n".join(lines)
    best, span = 0, (0, 0)
    for i in range(len(lines)):
        for j in range(len(lines), i, -1):
            weight = sum(1 for line in lines[i:j] if line.strip())
            if weight <= best:
                break
            if parses("\n".join(lines[i:j])):
                best, span = weight, (i, j)
                break
    return "\n".join(lines[span[0]:span[1]])


def names_in(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def returns(node):
    return any(isinstance(n, ast.Return) for n in ast.walk(node))


def sanitise(text, entry_point):
    # Keep the imports, and the classes, functions (with a return) and assignments the
    # entry point reaches; drop top-level calls, prints, asserts and `if __name__` blocks.
    code = longest_valid(text)
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return code
    imports, defs, seen = [], [], set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
            continue
        if isinstance(node, ast.ClassDef):
            name = node.name
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and returns(node):
            name = node.name
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        else:
            continue
        if name not in seen:
            seen.add(name)
            defs.append((name, node))
    deps = {name: names_in(node) for name, node in defs}
    reach, queue = {entry_point}, [entry_point]
    while queue:
        for n in deps.get(queue.pop(), ()):
            if n not in reach:
                reach.add(n)
                queue.append(n)
    segments = [ast.get_source_segment(code, n) for n in imports]
    segments += [ast.get_source_segment(code, n) for name, n in defs if name in reach]
    return "\n".join(s for s in segments if s)


def main():
    job = json.loads(sys.stdin.read())
    report = os.fdopen(os.dup(1), "w")
    out = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(0)
    if job["style"] == "evalplus":
        solution = sanitise(job["completion"], job["entry_point"])
    else:
        solution = job["prompt"] + job["completion"]
    nonce = job.pop("nonce")
    report.write(json.dumps({"nonce": nonce, "solution": solution}) + "\n")
    report.flush()
    test, entry_point = job["test"], job["entry_point"]
    del job
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(solution + "\n\n" + test, "solution.py", "exec"), scope)
        if "check" in scope:
            if entry_point not in scope:
                raise NameError("the solution does not define %s" % entry_point)
            scope["check"](scope[entry_point])
        passed, reason = True, None
    except BaseException as e:  # the solution's own exit, a failed assert, a limit
        passed, reason = False, reason_of(e)
    report.write(json.dumps({"nonce": nonce, "passed": passed, "reason": reason}) + "\n")
    report.flush()
    os._exit(0)


def reason_of(e):
    if isinstance(e, MemoryError):
        return "MemoryError: over the memory limit"
    if isinstance(e, OSError) and e.errno == 27:  # EFBIG
        return "OSError: over the output limit"
    if isinstance(e, SystemExit):
        return "SystemExit(%r) before the tests finished" % (e.code,)
    text = "%s: %s" % (type(e).__name__, e)
    return text[:300]


main()
