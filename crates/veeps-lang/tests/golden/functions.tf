# Function calls, answered by Terraform 1.11.4 (`terraform apply` of these outputs, then
# `terraform output -json` into functions.json); tests/golden.rs checks that veeps agrees.
# Regenerate: tests/golden/regenerate.sh

output "md5" { value = md5("hello world") }
output "sha1" { value = sha1("hello world") }
output "sha512" { value = sha512("hello world") }
output "base64sha256" { value = base64sha256("hello world") }
output "base64sha512" { value = base64sha512("hello world") }
output "urlencode" { value = urlencode("Hello World/é?&=x") }
output "strcontains_yes" { value = strcontains("hello world", "wor") }
output "strcontains_no" { value = strcontains("hello world", "wrd") }
output "signum" { value = [signum(-4), signum(0), signum(35)] }
output "pow" { value = [pow(3, 2), pow(4, 0.5), pow(2, -1)] }
output "log" { value = [log(16, 2), log(1, 10)] }
output "parseint" { value = [parseint("100", 10), parseint("FF", 16), parseint("-12", 10), parseint("1010", 2), parseint("zz", 36)] }
output "basename" { value = [basename("foo/bar/baz.txt"), basename("/"), basename("baz")] }
output "dirname" { value = [dirname("foo/bar/baz.txt"), dirname("baz"), dirname("/foo")] }
output "regex_plain" { value = regex("[a-z]+", "53453453.345345aaabbbccc23454") }
output "regex_groups" { value = regex("^(\\d+)-(\\d+)$", "10-20") }
output "regex_named" { value = regex("^(?P<user>[^@]+)@(?P<domain>.+)$", "ops@example.com") }
output "regexall" { value = regexall("[a-z]+", "1234abcd5678efgh9") }
output "regexall_groups" { value = regexall("(\\w)=(\\d)", "a=1, b=2") }
output "setintersection" { value = setintersection(["a", "b", "c"], ["b", "c", "d"], ["c", "b"]) }
output "setsubtract" { value = setsubtract(["a", "b", "c"], ["a", "c"]) }
output "setproduct" { value = setproduct(["a", "b"], ["x", "y"]) }
output "transpose" { value = transpose({ a = ["1", "2"], b = ["2", "3"] }) }
output "matchkeys" { value = matchkeys(["i-1", "i-2", "i-3"], ["us-a", "us-b", "us-a"], ["us-a"]) }
output "chunklist" { value = [chunklist(["a", "b", "c", "d", "e"], 2), chunklist(["a", "b"], 0)] }
output "indent" { value = indent(2, "a\nb\n\nc") }
output "uuidv5" { value = [uuidv5("dns", "www.example.com"), uuidv5("url", "https://example.com"), uuidv5("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "x")] }
output "textencodebase64" { value = textencodebase64("Hello", "UTF-16LE") }
output "textdecodebase64" { value = textdecodebase64("SABlAGwAbABvAA==", "UTF-16LE") }
output "formatdate" { value = [formatdate("YYYY-MM-DD hh:mm:ss ZZZ", "2018-01-02T23:12:01Z"), formatdate("DD MMM YYYY", "2018-01-02T23:12:01Z"), formatdate("EEEE, DD-MMM-YY hh:mm:ss ZZZ", "2018-01-02T23:12:01Z"), formatdate("h:mm AA", "2018-01-02T23:12:01Z"), formatdate("'Day' D 'of' MMMM", "2018-01-02T23:12:01Z")] }
output "timeadd" { value = [timeadd("2017-11-22T00:00:00Z", "10m"), timeadd("2017-11-22T00:00:00Z", "-1h30m"), timeadd("2017-11-22T00:00:00+01:00", "24h")] }
output "timecmp" { value = [timecmp("2017-11-22T00:00:00Z", "2017-11-22T00:00:00Z"), timecmp("2017-11-22T00:00:00Z", "2017-11-22T00:00:01Z"), timecmp("2017-11-22T01:00:00+01:00", "2017-11-22T00:00:00Z")] }

output "filemd5" { value = filemd5("hello.txt") }
output "filesha1" { value = filesha1("hello.txt") }
output "filesha256" { value = filesha256("hello.txt") }
output "filesha512" { value = filesha512("hello.txt") }
output "filebase64" { value = filebase64("hello.txt") }
output "filebase64sha256" { value = filebase64sha256("hello.txt") }
output "filebase64sha512" { value = filebase64sha512("hello.txt") }

locals {
  tmpl = "Hello, $${name}!%%{for x in xs} [$${x}]%%{endfor}"
}
output "templatestring" { value = templatestring(local.tmpl, { name = "veeps", xs = ["a", "b"] }) }
output "csvdecode" { value = csvdecode("a,b,c\n1,2,3\n\"x, y\",\"say \"\"hi\"\"\",\n") }
output "ephemeralasnull" { value = ephemeralasnull("x") }
output "core_namespace" { value = core::upper(core::join("-", ["a", "b"])) }

output "yamlencode_map" { value = yamlencode({ a = "b", c = ["d", 1, true, null], e = { f = "g" }, "h i" = [], j = {} }) }
output "yamlencode_list" { value = yamlencode(["x", { k = "v" }, ["n"]]) }
output "yamlencode_multiline" { value = yamlencode("multi\nline") }
output "yamlencode_number" { value = yamlencode(1.5) }
output "yamlencode_nested" { value = yamlencode({ list = [{ a = 1, b = 2 }, { c = 3 }] }) }
output "yamlencode_quoted" { value = yamlencode(["é", "tab\there", "quote\"x", "back\\slash", "nl\n", "", "123", "true", "yes"]) }
output "yamlencode_scalars" { value = [yamlencode(true), yamlencode(null), yamlencode(-3)] }
output "yamlencode_block" { value = yamlencode({ m = "two\nlines\n", n = [{ o = "p\nq" }] }) }
output "yamlencode_long" { value = yamlencode({ s = "a long string that goes on and on and on and on and on and on and on and on past eighty columns for sure", t = ["another long one that keeps going and going and going and going and going well past the edge"] }) }
output "yamlencode_long_top" { value = yamlencode("a long top-level string that goes on and on and on and on and on and on past eighty columns") }
output "yamldecode_doc" { value = yamldecode("a: 1\nb: [x, 'y', true, null, 1.5]\nc:\n  d: e\n") }
output "yamldecode_yaml11" { value = yamldecode("- 0x10\n- 1e3\n- ~\n- 'no'\n- no\n- on\n- 010\n- 1_000\n- +12\n- -0.5\n- .5\n- 1.\n- 0b101\n- 0o17\n- 0X1F\n- +0x10\n- 0.\n- 12:30\n- \"007\"\n- !!str 5\n-\n") }
output "yamldecode_blocks" { value = yamldecode("text: |\n  two\n  lines\nfolded: >\n  one\n  line\nanchor: &a {k: v}\nagain: *a\n") }
output "yamldecode_scalar" { value = [yamldecode("hello"), yamldecode("42")] }

# Expressions (issue "Terraform's language, exactly").
locals {
  l = ["a", "b"]
}
output "split_empty" { value = split(",", "") }
output "range_down" { value = range(3, 0) }
output "range_step" { value = range(1, 10, 3) }
output "if_string" { value = "%{if "true"}yes%{endif}" }
output "jsonencode_escapes" { value = jsonencode({ a = "<b>&\u2028", n = [1, 1.5, 0.1] }) }
output "unwrap_list" { value = "${local.l}" }
output "unwrap_number" { value = "${5}" }
output "strip_for" { value = "<%{~for x in local.l~}\n  ${x}\n%{~endfor~}>" }
output "strip_if" { value = "a %{~if true~} b %{~endif~} c" }
output "heredoc_strip" {
  value = <<-EOT
  %{~for x in local.l~}
  item ${x}
  %{~endfor~}
  EOT
}
output "toset_order" { value = toset(["c", "a", "b", "a"]) }
output "toset_numbers" { value = toset([10, 2, 1]) }
output "replace_regex" { value = replace("hello world", "/o(.)/", "0$1") }
output "upper_unicode" { value = [upper("straße"), lower("ÀÉ"), length("👍🏽"), strrev("abc")] }
output "format_verbs" { value = [format("%v", [1, "a"]), format("%+d", 5), format("%e", 1234.5), format("%g", 0.000012), format("%[2]s %[1]s", "a", "b")] }
output "division" { value = [7 / 2, 2 / 3 * 3, 0.1 + 0.2] }
output "mixed_cond" { value = true ? 1 : "a" }
output "tomap_unify" { value = tomap({ a = 1, b = "x" }) }
output "format_more" { value = [format("%e", 0.000123), format("%.2e", 1234.5), format("%g", 1234567), format("%g", 100), format("%+.1f", 2.25), format("%[1]s-%[1]s", "x"), format("%v", { a = 1 }), format("%05d", -42), format("%G", 1e-7)] }
output "graphemes" { value = [length("👍🏽x"), substr("étés", 1, 2), strrev("👍🏽é"), length("🇫🇷")] }
output "nfc" { value = [substr("e\u0301té", 0, 2), length("e\u0301"), "${"e\u0301"}x"] }
output "unify_more" { value = [tolist([1, "a", true]), false ? "x" : 5, toset([2, "1", 10]), true ? null : "a", tomap({ a = true, b = "y" })] }
output "unify_cond_list" { value = true ? ["a"] : ["b", "c"] }
