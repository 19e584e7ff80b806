module vicpull.dev/vicpull

go 1.19
