#!/usr/bin/env python3
"""Prints, per layer of a counts trace, the dispersion D and the drift ratio R
(docs/forecasting.md) over consecutive 100-step windows: the table the state
thresholds were calibrated on. Each entry is WINDOW_START:D/R.

    /usr/bin/python3 bench/drift_ratio_table.py TRACE.counts.csv.gz [TOP_K]

A calibration aid, not a general reader: it expects the column order
step,layer,tokens,c0,... with layers 0..L-1 (as bench/traces/train_moe.py
writes); `moecast bench` reads any trace."""
import gzip, numpy as np, sys
path=sys.argv[1]; K=int(sys.argv[2]) if len(sys.argv) > 2 else 2
rows=np.loadtxt(gzip.open(path,'rt'),delimiter=',',skiprows=1)
steps=np.unique(rows[:,0]).size; L=int(rows[:,1].max())+1
c=rows[:,3:].reshape(steps,L,-1); N=rows[:,2].reshape(steps,L)
p=c/c.sum(-1,keepdims=True)
W=100
for l in range(L):
    out=[]
    for t0 in range(0,steps-W+1,W if steps<=6000 else 500):
        w=p[t0:t0+W,l]; n=N[t0:t0+W,l]
        var=w.var(0,ddof=1).sum()
        pm=w.mean(0); samp=(pm*(1-K*pm)).sum()*np.mean(1/(K*n))
        dv=(np.diff(w,axis=0).var(0,ddof=1)/2).sum()
        out.append((t0, var/samp, var/dv))
    print('layer',l,' '.join('%d:%.1f/%.2f'%o for o in out[:12]), '...', ' '.join('%d:%.1f/%.2f'%o for o in out[-5:]))
