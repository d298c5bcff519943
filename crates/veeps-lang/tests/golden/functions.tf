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

# Every function, several cases each.
output "fn_abs" { value = [abs(-3), abs(0), abs(2.5), abs(-0.25)] }
output "fn_ceil_floor" { value = [ceil(1.2), ceil(-1.2), floor(1.8), floor(-1.8), ceil(5), floor(5)] }
output "fn_max_min" { value = [max(1, 5, 3), min(1, 5, 3), max(-1.5, -2), min([4, 2, 8]...), max(7)] }
output "fn_sum" { value = [sum([1, 2, 3]), sum([0.5, 0.25]), sum([-1, 1]), sum(toset([1, 2, 2]))] }
output "fn_signum_more" { value = [signum(-5), signum(100000)] }
output "fn_pow_more" { value = [pow(2, 10), pow(10, -2), pow(0, 0), pow(-2, 3)] }
output "fn_log_more" { value = [log(100, 10), log(8, 2), log(2, 2)] }
output "fn_parseint_more" { value = [parseint("0", 10), parseint("-ff", 16), parseint("777", 8), parseint("Z", 36)] }
output "fn_format_basic" { value = [format("Hello, %s!", "Ander"), format("%d items", 3), format("%.2f", 3.14159), format("%5s|%-5s|", "ab", "cd"), format("%%"), format("%t", true), format("%x %X %o %b", 255, 255, 8, 5), format("%q", "a\"b")] }
output "fn_formatlist" { value = [formatlist("Hello, %s!", ["Valentina", "Ander"]), formatlist("%s=%d", ["a", "b"], [1, 2]), formatlist("%s-%s", "x", ["1", "2"])] }
output "fn_join" { value = [join(", ", ["foo", "bar", "baz"]), join(", ", ["foo"]), join("", []), join("-", ["a"], ["b", "c"])] }
output "fn_split" { value = [split(",", "foo,bar,baz"), split(",", "foo"), split("", "abc"), split(",", ",a,")] }
output "fn_lower_upper" { value = [lower("HELLO"), upper("hello"), lower("ÀB"), upper("àb"), lower(""), upper("ǆ")] }
output "fn_title" { value = [title("hello world"), title("HELLO"), title("a-b c_d"), title("")] }
output "fn_replace" { value = [replace("1 + 2 + 3", "+", "-"), replace("hello world", "/w.*d/", "everybody"), replace("aaa", "a", "b"), replace("abc", "", "-"), replace("2024-01-02", "/(\\d+)-(\\d+)-(\\d+)/", "$3.$2.$1"), replace("x", "/x/", "$$")] }
output "fn_substr" { value = [substr("hello world", 1, 4), substr("hello", -3, -1), substr("hello", 0, 100), substr("hello", 2, 0), substr("", 0, 1), substr("abc", 0, -2), substr("abcdef", 1, -3), substr("abc", 5, 1), substr("abc", -5, 2)] }
output "fn_trim" { value = [trim("?!hello?!", "!?"), trim("foobar", "far"), trimspace("  hello\n\t"), trimprefix("helloworld", "hello"), trimprefix("helloworld", "world"), trimsuffix("helloworld", "world"), trimsuffix("x", "")] }
output "fn_chomp" { value = [chomp("hello\n"), chomp("hello\r\n"), chomp("hello\n\n"), chomp("hello")] }
output "fn_strrev" { value = [strrev("hello"), strrev(""), strrev("ab c")] }
output "fn_startswith" { value = [startswith("hello world", "hello"), startswith("hello world", "world"), endswith("hello world", "world"), endswith("hello", ""), startswith("", "")] }
output "fn_regex_more" { value = [regex("(\\d\\d\\d\\d)-(\\d\\d)-(\\d\\d)", "2019-02-01"), regex("[a-z]+@[a-z]+\\.com", "x me@ex.com y"), can(regex("^x", "abc")), regex("(?i)HELLO", "say hello")] }
output "fn_regexall_more" { value = [length(regexall("[a-z]+", "1234abcd5678efgh9")), regexall("\\d", "none"), regexall("(?P<k>\\w)=(?P<v>\\d)", "a=1 b=2")] }
output "fn_indent_more" { value = [indent(4, "x"), indent(0, "a\nb"), indent(1, "a\n\nb\n")] }
output "fn_length" { value = [length([]), length(["a", "b"]), length({ a = 1 }), length("hello"), length(""), length(toset(["a", "a"]))] }
output "fn_element" { value = [element(["a", "b", "c"], 1), element(["a", "b", "c"], 3), element(["a", "b", "c"], 5)] }
output "fn_index" { value = [index(["a", "b", "c"], "b"), index([1, 2, 3], 3)] }
output "fn_contains" { value = [contains(["a", "b", "c"], "a"), contains(["a", "b", "c"], "d"), contains([1, 2], 2), contains(toset(["x"]), "x")] }
output "fn_lookup" { value = [lookup({ a = "ay", b = "bee" }, "a", "what?"), lookup({ a = "ay", b = "bee" }, "c", "what?"), lookup({ a = 1 }, "a")] }
output "fn_merge" { value = [merge({ a = "b", c = "d" }, { e = "f", c = "z" }), merge({ a = "b" }, { e = "f" }), merge(), merge({ x = 1 }, null)] }
output "fn_concat" { value = [concat(["a", ""], ["b", "c"]), concat([], ["x"]), concat([1], [2], [3])] }
output "fn_flatten" { value = [flatten([["a", "b"], [], ["c"]]), flatten([[["a", "b"], []], ["c"]]), flatten([1, [2, [3]]]), flatten([])] }
output "fn_distinct" { value = [distinct(["a", "b", "a", "c", "d", "b"]), distinct([1, 1, 2]), distinct([])] }
output "fn_compact" { value = [compact(["a", "", "b", null, "c"]), compact([]), compact(["", ""])] }
output "fn_reverse" { value = [reverse([1, 2, 3]), reverse([]), reverse(["a"])] }
output "fn_sort" { value = [sort(["e", "d", "a", "x"]), sort(["10", "9", "1"]), sort([]), sort(["B", "a", "A", "b"])] }
output "fn_slice" { value = [slice(["a", "b", "c", "d"], 1, 3), slice([1, 2], 0, 0), slice([1, 2], 2, 2)] }
output "fn_one" { value = [one([]), one(["hello"]), one(toset([])), one(toset(["x"]))] }
output "fn_keys_values" { value = [keys({ a = 1, c = 2, d = 3 }), values({ a = 3, c = 2, d = 1 }), keys({}), values({ b = "x", a = "y" })] }
output "fn_zipmap" { value = [zipmap(["a", "b"], [1, 2]), zipmap([], []), zipmap(["x"], [["y"]])] }
output "fn_range" { value = [range(3), range(1, 4), range(1, 8, 2), range(1, 4, 0.5), range(4, 1), range(10, 5, -2), range(-3), range(0)] }
output "fn_setunion" { value = [setunion(["a", "b"], ["b", "c"], ["d"]), setunion([], []), setunion([3, 1], [2])] }
output "fn_set_more" { value = [setintersection(["a"], []), setsubtract([1, 2, 3], [2]), setproduct(["a"], [1, 2], [true]), length(setproduct([], ["x"]))] }
output "fn_transpose_more" { value = [transpose({}), transpose({ a = [], b = ["x"] })] }
output "fn_matchkeys_more" { value = [matchkeys(["a", "b"], [1, 2], [3]), matchkeys(["a", "b", "c"], ["x", "y", "x"], ["x", "y"])] }
output "fn_chunklist_more" { value = [chunklist([], 3), chunklist(["a", "b", "c"], 1), chunklist(["a", "b", "c"], 5)] }
output "fn_coalesce" { value = [coalesce("a", "b"), coalesce("", "b"), coalesce(1, 2), coalesce(null, "x"), coalesce(["", "b"]...)] }
output "fn_coalescelist" { value = [coalescelist(["a", "b"], ["c", "d"]), coalescelist([], ["c", "d"]), coalescelist([], [], ["e"])] }
output "fn_alltrue" { value = [alltrue([]), alltrue([true, true]), alltrue([true, false]), alltrue(["true"]), anytrue([]), anytrue([false, true]), anytrue(["false"])] }
output "fn_tostring" { value = [tostring("hello"), tostring(1), tostring(true), tostring(1.5), tostring(null) == null] }
output "fn_tonumber" { value = [tonumber(1), tonumber("1"), tonumber("-2.5"), tonumber("1e3"), tonumber(null) == null] }
output "fn_tobool" { value = [tobool(true), tobool("true"), tobool("false"), tobool(null) == null] }
output "fn_tolist" { value = [tolist(["a", "b", "c"]), tolist(toset(["b", "a"])), tolist([])] }
output "fn_toset" { value = [toset(["a", "b", "c"]), toset(["c", "b", "b"]), toset([])] }
output "fn_tomap" { value = [tomap({ a = 1, b = 2 }), tomap({ a = "x" }), tomap({})] }
output "fn_jsonencode" { value = [jsonencode({ hello = "world" }), jsonencode([1, true, null, "s"]), jsonencode("a\"b\\c\n"), jsonencode(1.5), jsonencode([]), jsonencode({}), jsonencode({ b = 1, a = 2 })] }
output "fn_jsondecode" { value = [jsondecode("{\"hello\": \"world\"}"), jsondecode("true"), jsondecode("[1, \"a\", null]"), jsondecode("1.25"), jsondecode("\"s\"")] }
output "fn_base64" { value = [base64encode("Hello World"), base64decode("SGVsbG8gV29ybGQ="), base64encode(""), base64encode("é")] }
output "fn_hashes" { value = [sha256("hello world"), md5(""), sha1(""), sha256(""), sha512("")] }
output "fn_base64sha_more" { value = [base64sha256(""), base64sha512("a")] }
output "fn_urlencode_more" { value = [urlencode("a b"), urlencode("~-_."), urlencode("https://example.com/a?b=c&d=e"), urlencode("")] }
output "fn_uuidv5_more" { value = [uuidv5("oid", "1.2.3"), uuidv5("x500", "cn=x")] }
output "fn_textencode_more" { value = [textencodebase64("Hello", "UTF-8"), textdecodebase64("SGVsbG8=", "UTF-8"), textencodebase64("é", "ISO-8859-1")] }
output "fn_csvdecode_more" { value = [csvdecode("a\n"), csvdecode("k,v\nx,1\ny,2\n")] }
output "fn_yaml_roundtrip" { value = yamldecode(yamlencode({ a = [1, 2], b = { c = "d" } })) }
output "fn_file_more" { value = [file("hello.txt"), fileexists("hello.txt"), fileexists("nope.txt"), templatefile("files/a.txt", {})] }
output "fn_basename_more" { value = [basename("a/b/"), basename("."), basename(""), basename("a//b")] }
output "fn_dirname_more" { value = [dirname("a/b/"), dirname("/"), dirname(""), dirname("a//b//c")] }
output "fn_fileset" { value = [fileset("files", "*.txt"), fileset("files", "**"), fileset("files", "**/*.txt"), fileset("files", "{a,b}.*"), fileset("files", "sub/?.txt"), fileset("files", "[ab].*"), fileset("files", "nothing*"), fileset("files/sub", "*")] }
output "fn_cidrsubnet" { value = [cidrsubnet("172.16.0.0/12", 4, 2), cidrsubnet("10.1.2.0/24", 4, 15), cidrsubnet("fd00:fd12:3456:7890::/56", 16, 162), cidrsubnet("10.0.0.0/8", 0, 0)] }
output "fn_cidrsubnets" { value = [cidrsubnets("10.1.0.0/16", 4, 4, 8, 4), cidrsubnets("fd00:fd12:3456:7890::/56", 16, 16, 16, 32)] }
output "fn_cidrhost" { value = [cidrhost("10.12.112.0/20", 16), cidrhost("10.12.112.0/20", 268), cidrhost("fd00:fd12:3456:7890:00a2::/72", 34), cidrhost("10.0.0.0/24", -1)] }
output "fn_cidrnetmask" { value = [cidrnetmask("172.16.0.0/12"), cidrnetmask("10.0.0.0/32"), cidrnetmask("0.0.0.0/0")] }
output "fn_formatdate_more" { value = [formatdate("DD MMM YYYY hh:mm ZZZ", "2018-01-02T23:12:01-08:00"), formatdate("EEE, DD MMM YYYY hh:mm:ss ZZZZ", "2018-01-02T23:12:01+05:30"), formatdate("YY M D H m s", "2009-03-04T05:06:07Z"), formatdate("ZZZZZ", "2018-01-02T23:12:01-08:00"), formatdate("hh:mm:ss.", "2018-01-02T23:12:01.5Z"), formatdate("AA aa", "2018-01-02T13:12:01Z")] }
output "fn_timeadd_more" { value = [timeadd("2017-11-22T00:00:00Z", "1.5h"), timeadd("2017-11-22T23:59:59Z", "1s"), timeadd("2020-02-28T00:00:00Z", "48h"), timeadd("2017-11-22T00:00:00Z", "0s")] }
output "fn_timecmp_more" { value = [timecmp("2017-11-22T00:00:00.5Z", "2017-11-22T00:00:00Z"), timecmp("2017-11-22T00:00:00-01:00", "2017-11-22T01:00:00Z")] }
output "fn_try_can" { value = [try(tonumber("x"), 5), try(local.l[5], "none"), try("first", "second"), can(tonumber("x")), can(local.l[0]), try(jsondecode("{"), {})] }
output "fn_sensitive_marks" { value = [nonsensitive(sensitive("x")), issensitive("x"), issensitive(nonsensitive(sensitive(1)))] }
output "fn_strcontains_more" { value = [strcontains("", ""), strcontains("abc", "")] }
locals {
  tmpl_if = "%%{if x}yes%%{else}no%%{endif}"
}
output "fn_templatestring_more" { value = templatestring(local.tmpl_if, { x = false }) }

# Operators and expressions.
output "op_arith" { value = [1 + 2, 5 - 7, 3 * 4, 10 / 4, 10 % 3, -7 % 3, 7 % -3, -(3), 2 * -1.5] }
output "op_compare" { value = [1 < 2, 2 <= 2, 3 > 4, "a" == "a", 1 == 1.0, [1] == [1], { a = 1 } == { a = 1 }, "1" == 1, null == null, 1 != 2] }
output "op_logic" { value = [true && false, true || false, !true, false || !false, true && (1 < 2)] }
output "op_precedence" { value = [1 + 2 * 3, (1 + 2) * 3, 2 * 3 % 4, !false && false, 1 + 2 > 2 == true] }
output "op_strings" { value = ["a${1 + 1}b", "${true}", "x${null == null}", "%{for i, v in ["a", "b"]}${i}:${v},%{endfor}"] }
output "op_cond" { value = [true ? "y" : "n", 1 > 2 ? 1 : 2, null == null ? [] : ["x"]] }
output "op_for_list" { value = [[for s in ["a", "b"] : upper(s)], [for i, s in ["a", "b"] : "${i}${s}"], [for s in ["a", "", "b"] : s if s != ""], [for k, v in { b = 2, a = 1 } : "${k}=${v}"]] }
output "op_for_map" { value = [{ for s in ["a", "bb"] : s => length(s) }, { for k, v in { a = 1, b = 2 } : v => k }, { for s in ["a", "ab", "b"] : substr(s, 0, 1) => s... }] }
output "op_for_set" { value = [for x in toset(["c", "a", "b"]) : x] }
output "op_splat" { value = [[{ a = 1 }, { a = 2 }][*].a, [{ a = [1] }][*].a[0], { a = 1 }[*], null[*], "x"[*]] }
output "op_index" { value = [["a", "b"][1], { a = "x" }["a"], { a = { b = "c" } }.a.b, [[1, 2]][0][1], local.l.1] }
output "op_heredoc" {
  value = <<EOT
line one
  ${upper("two")}
EOT
}
output "op_heredoc_indent" {
  value = <<-EOT
    indented
      more
    back
  EOT
}
output "op_escapes" { value = ["tab\there", "nl\\n", "quote\"", "dollar $${x}", "percent %%{x}", "unicode \u00e9 \U0001F600"] }
output "op_numbers" { value = [1e3, 1.5e-3, 0.1, 100, -0, 1.0, 12345678901] }
output "op_types" { value = [tolist(["a"]), tomap({ a = ["b"] }), [for x in [1, 2] : x * 2]] }
output "fn_rsadecrypt" { value = [rsadecrypt(file("rsa-msg.txt"), file("rsa-key.txt")), rsadecrypt(file("rsa-msg.txt"), file("rsa-key8.txt"))] }
output "fn_issensitive" { value = [issensitive(sensitive("x")), issensitive(nonsensitive(sensitive("x")))] }

output "hd_basic" {
  value = <<-EOT
    Foo
    Bar
    Baz
  EOT
}
output "hd_indented_more" {
  value = <<-EOT
    Foo
      Bar
    Baz
  EOT
}
output "hd_indented_less" {
  value = <<-EOT
      Foo
    Bar
      Baz
  EOT
}
output "hd_interp_less" {
  value = <<-EOT
      ${"Foo"}
    ${"Bar"}
      ${"Baz"}
  EOT
}
output "hd_interp_start" {
  value = <<-EOT
    Foo
${"Bar"}
    Baz
  EOT
}
output "hd_blank_lines" {
  value = <<-EOT
    Foo

    Bar
      
    Baz
  EOT
}
output "hd_tabs" {
  value = <<-EOT
	Foo
	 Bar
	 Baz
  EOT
}
output "hd_plain_strip" {
  value = <<EOT
  %{~for x in local.l~}
  item ${x}
  %{~endfor~}
  done
EOT
}
output "hd_for_nested" {
  value = <<-EOT
    list:
    %{for x in local.l}
      - ${x}
    %{endfor}
    end
  EOT
}
output "hd_if_strip" {
  value = <<-EOT
    a
    %{~ if true ~}
      b
    %{~ else ~}
      c
    %{~ endif ~}
    d
  EOT
}
output "hd_interp_strip" {
  value = <<-EOT
    x   ${~ "y" ~}   z
      w
  EOT
}
output "hd_escapes" {
  value = <<-EOT
    $${not} %%{not} \n ${"a"}
  EOT
}
output "hd_cloud_init" {
  value = <<-EOT
    #cloud-config
    packages:
    %{~ for p in ["nginx", "jq"] ~}
      - ${p}
    %{~ endfor ~}

    runcmd:
      - echo done
  EOT
}

# Numbers: 512-bit binary floats, printed as the shortest decimal that reads back.
output "num_exact" { value = [1 / 3, length([1, 2]) / 3, pow(2, 0.5), pow(2, 0.5) * 1, 9007199254740993 + 0, 12345678901234567890123 * 10, parseint("ff", 16) / 7, -7 % 3, 7.5 % 2, 5 % 0, 0.1 * 3, 2 / 3 * 3, floor(1 / 3 * 3), 1e-5, 123.456e2, max(0.1, 1 / 3), sum([0.1, 0.2, 0.3]), tonumber("0.1") + 0.2, jsondecode("0.1") + jsondecode("0.2"), ceil(1e20 / 3), abs(-1 / 3), -0.5 * 3, 1e21, 1.7976931348623157e308 * 10] }
output "num_ranges" { value = [range(0, 1, 0.1), range(0, 1, 0.25), range(1, 0, -0.3)] }
output "num_strings" { value = [tostring(1 / 0), tostring(-1 / 0), "${1 / 7}", format("%d", 12345678901234567890), format("%.3f", 1 / 3), tostring(0.1 + 0.2 == 0.3), 1 / 3 == 0.3333333333333333, log(1000, 10), signum(-3) / 7] }
output "num_big" { value = [1e300 * 1e100, 2e-300 * 1e300, 340282366920938463463374607431768211456 - 1] }
