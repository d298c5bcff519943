resource "x" "y" {
policy = jsonencode({
Version = "2012-10-17"
Statement = [
{ Effect = "Allow" },
{
Effect = "Deny"
},
]
})
list = [
{
a = 1
}, {
b = 2
}
]
nested = merge({
a = 1
}, {
b = [
1,
]
})
call = f(
g(1,
2)
)
}
