#!/usr/bin/env bash
# bench.sh's bar chart: reads bench.sh's JSON report on stdin, writes an SVG on stdout (by hand: no dependency).
# Two groups (read, write), a bar per method, each labelled with its MB/s and its ratio to the device; linear scale,
# so the network's bars look as small next to the device's as they are.
set -euo pipefail
report=$(cat)
title=$(jq -r '"\(.size_mib) MiB, link \(.link), images on \(.backing), \(.fs); median of \(.rounds) (\(.date))"' <<<"$report")
link=$(jq -r .link <<<"$report")
# The link's rate in MB/s (tc's units: kbit, mbit, gbit are powers of 1000), 0 when unshaped.
link_mbps=$(awk -v l="$link" 'BEGIN { n = l + 0; u = substr(l, length(n) + 1)
	m = (u == "gbit" ? 1e9 : u == "mbit" ? 1e6 : u == "kbit" ? 1e3 : u == "bit" ? 1 : 0); print n * m / 8e6 }')
jq -r '.results[] | [.direction, .method, (.mbps | round), (.ratio * 100 | round / 100), .label] | @tsv' <<<"$report" |
	awk -F'\t' -v title="$title" -v link="$link" -v link_mbps="$link_mbps" '
	function esc(s) { gsub(/&/, "\\&amp;", s); gsub(/</, "\\&lt;", s); gsub(/>/, "\\&gt;", s); return s }
	{ n++; dir[n] = $1; slot[n] = ++count[$1]; if (count[$1] > nslots) nslots = count[$1]; meth[n] = $2; mbps[n] = $3; ratio[n] = $4; label[n] = $5; if ($3 > max) max = $3
	  if (!(($2) in seen)) { seen[$2] = 1; order[++nm] = $2; lab[$2] = $5 } }
	END {
		color["fio"] = "#6b6b6b"; color["fio32"] = "#b0b0b0"; color["fusedcp"] = "#1f77b4"; color["fusedcat"] = "#9ecae1"; color["sshfs"] = "#ff7f0e"; color["nfs"] = "#2ca02c"
		bw = 64; gap = 10; ggap = 70; left = 70; top = 60; h = 260
		# a round top for the axis: 1, 2 or 5 times a power of ten
		step = 1; while (step * 10 <= max) step *= 10
		split("1 1.5 2 2.5 3 4 5 6 8 10", nice, " ")
		for (k = 1; k <= 10; k++) { top_v = nice[k] * step; if (top_v >= max * 1.1) break }
		ngroups = 0; for (i = 1; i <= n; i++) if (!(dir[i] in g)) { g[dir[i]] = ++ngroups; gname[ngroups] = dir[i] }
		gw = nslots * bw + (nslots - 1) * gap
		width = left + ngroups * gw + (ngroups - 1) * ggap + 40
		legend_y = top + h + 50
		height = legend_y + 24 * nm + 30
		printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n", width, height, width, height
		printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
		printf "<text x=\"%d\" y=\"22\" font-size=\"15\" font-weight=\"bold\">fused bench: MB/s (higher is better)</text>\n", left
		printf "<text x=\"%d\" y=\"38\" fill=\"#555\">%s</text>\n", left, esc(title)
		for (t = 0; t <= 5; t++) {
			v = top_v * t / 5; y = top + h - h * t / 5
			printf "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, y, width - 30, y
			printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555\">%g</text>\n", left - 6, y + 4, v
		}
		for (i = 1; i <= n; i++) {
			gi = g[dir[i]]; mi = slot[i]
			x = left + (gi - 1) * (gw + ggap) + (mi - 1) * (bw + gap)
			bh = h * mbps[i] / top_v; y = top + h - bh
			c = (meth[i] in color) ? color[meth[i]] : "#999"
			printf "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%.1f\" fill=\"%s\"><title>%s %s: %d MB/s (%.2fx device)</title></rect>\n", x, y, bw, bh, c, dir[i], esc(label[i]), mbps[i], ratio[i]
			printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"middle\" font-weight=\"bold\">%d</text>\n", x + bw / 2, y - 17, mbps[i]
			printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#555\" font-size=\"11\">%.2fx</text>\n", x + bw / 2, y - 4, ratio[i]
		}
		for (gi = 1; gi <= ngroups; gi++) {
			x = left + (gi - 1) * (gw + ggap) + gw / 2
			printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">%s</text>\n", x, top + h + 22, gname[gi]
		}
		printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", left, top + h, width - 30, top + h
		if (link_mbps > 0 && link_mbps <= top_v) {
			y = top + h - h * link_mbps / top_v
			printf "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#c00\" stroke-dasharray=\"6 4\"/>\n", left, y, width - 30, y
		}
		for (m = 1; m <= nm; m++) {
			y = legend_y + 24 * (m - 1)
			c = (order[m] in color) ? color[order[m]] : "#999"
			printf "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"14\" fill=\"%s\"/><text x=\"%d\" y=\"%d\">%s</text>\n", left, y, c, left + 20, y + 12, esc(lab[order[m]])
		}
		printf "<text x=\"%d\" y=\"%d\" fill=\"#555\" font-size=\"11\">bar labels: MB/s (whole command; fio: its own clock) and the ratio to fio on the raw device, same direction</text>\n", left, legend_y + 24 * nm + 4
		if (link_mbps > 0) printf "<text x=\"%d\" y=\"%d\" fill=\"#c00\" font-size=\"11\">dashed line: the link'"'"'s rate (%s = %d MB/s)</text>\n", left, legend_y + 24 * nm + 20, link, link_mbps
		print "</svg>"
	}'
