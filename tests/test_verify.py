"""derive verify: a table of hand-derived formulas (right ones written several ways, and each typical mistake),
hostile input, the command line, and every equation the tool prints read back by the verifier's own parser."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import re

import pytest
import sympy as sp

import derive
from derive.define.functions import Sigmoid
from derive.verifier.formula import FormulaError, MAX_CHARS
from derive.verifier.verification import read, symbols, verify

ROOT = Path(__file__).resolve().parent.parent
A = "article"
BN_CHAIN = "linear,batch_norm,relu,linear,softmax_cross_entropy"
CONV_X = (r"\sum_g [0 \le c - g C_g \le C_g - 1] \sum_{o} [0 \le o - g O_g \le O_g - 1] \sum_{i} "
          r"\left[0 \leq \frac{h + P_H - i s_H}{d_H} \leq K_H - 1\right] "
          r"\left[\left(h + P_H - i s_H\right) \bmod d_H = 0\right] \sum_{j} \delta_{noij} "
          r"w_{o,c - g C_g,\frac{h + P_H - i s_H}{d_H},\frac{w + P_W - j s_W}{d_W}} \left[0 \leq \frac{w + P_W - j s_W}{d_W} \leq K_W - 1\right] "
          r"\left[\left(w + P_W - j s_W\right) \bmod d_W = 0\right]")
BN_X = (r"\frac{\gamma_c}{N S\sqrt{\sigma^2_c+\epsilon}}\left(N S g_{ncs} - \sum_n\sum_s g_{ncs} - "
        r"\hat{x}_{ncs}\sum_n\sum_s g_{ncs}\hat{x}_{ncs}\right)")

# (op or chain, --wrt, formula, equivalent?, a word the hint must contain or None)
GN_X = (r"\sum_h \frac{[0 \le w - K h \le K - 1]}{K S \sqrt{\sigma^2_{nh} + \epsilon}} \left(K S \gamma_w g_{n,h,w-Kh,s} "
        r"- \sum_q \gamma_{Kh+q} \sum_{s'} g_{nhqs'} - \hat{x}_{n,h,w-Kh,s} \sum_q \gamma_{Kh+q} \sum_{s'} g_{nhqs'} "
        r"\hat{x}_{nhqs'}\right)")

TABLE = [
    # the fully connected layer, batch form, index and matrix form
    ("linear", "W", r"\sum_n \delta_{nk} x_{nj}", True, None),
    ("linear", "W", r"\sum_{n=1}^{N} \delta_{nk} x_{nj}", True, None),
    ("linear", "W", r"\sum_{n=0}^{N-1} x_{nj} \delta_{nk}", True, None),
    ("linear", "W", r"\boldsymbol{\delta}^T X", True, None),
    ("linear", "W", r"\delta^{T} \cdot X", True, None),
    ("linear", "W", "delta.T @ X", True, None),
    ("linear", "W", "sum(delta[n,k]*x[n,j], n)", True, None),
    ("linear", None, r"\frac{\partial E}{\partial w_{kj}} = \sum_n \delta_{nk} x_{nj}", True, None),
    ("linear", None, r"\frac{\partial E}{\partial w_{ab}} = \sum_n \delta_{na} x_{nb}", True, None),
    ("linear", None, r"\frac{\partial E}{\partial W} = \boldsymbol{\delta}^T X", True, None),
    ("linear", "W", r"\delta_k x_j", True, None),
    ("linear", "W", r"-\sum_n \delta_{nk} x_{nj}", False, "sign"),
    ("linear", "W", r"\sum_k \delta_{nk} x_{nj}", False, "wrong index"),
    ("linear", "W", r"X^T \boldsymbol{\delta}", False, "transposed"),
    ("linear", "W", r"\frac{1}{N}\sum_n \delta_{nk} x_{nj}", False, "1/N"),
    ("linear", "W", r"\delta_{nk} x_{nj}", False, "missing sum over n"),
    ("linear", "x", r"\sum_k \delta_{nk} w_{kj}", True, None),
    ("linear", "x", r"\sum_k w_{kj}\delta_{nk}", True, None),
    ("linear", "x", r"\boldsymbol{\delta} W", True, None),
    ("linear", "x", "delta @ W", True, None),
    ("linear", "x", r"\sum_k \delta_{nk} w_{jk}", False, "transposed index"),
    ("linear", "x", r"\boldsymbol{\delta} W^T", False, "transpose"),
    ("linear", "b", r"\sum_n \delta_{nk}", True, None),
    ("linear", "b", r"\boldsymbol{\delta}^{T}\mathbf{1}", True, None),
    ("linear", "b", r"\mathbf{1}^T \boldsymbol{\delta}", True, None),
    ("linear", "b", "sum(delta, axis=0)", True, None),
    ("linear", "b", r"\delta_k", True, None),
    ("linear", "b", r"\sum_k \delta_{nk}", False, "wrong index"),
    ("linear", "b", r"\frac{1}{N}\sum_n \delta_{nk}", False, "1/N"),
    # activations
    ("sigmoid", "x", r"g_i y_i (1-y_i)", True, None),
    ("sigmoid", "x", r"g_i (y_i - y_i^2)", True, None),
    ("sigmoid", "x", r"g_i \sigma(x_i)(1-\sigma(x_i))", True, None),
    ("sigmoid", "x", r"g_i \frac{e^{-x_i}}{(1+e^{-x_i})^2}", True, None),
    ("sigmoid", "x", r"\vec{g} \odot \vec{y} \odot (1 - \vec{y})", True, None),
    ("sigmoid", "x", "g[i]*y[i]*(1-y[i])", True, None),
    ("sigmoid", "x", r"g_i", False, "activation derivative"),
    ("sigmoid", "x", r"g_i y_i (y_i - 1)", False, "sign"),
    ("tanh", "x", r"g_i (1 - y_i^2)", True, None),
    # batch norm: the compact form, written several ways (index, vector, plain), and its typical mistakes
    ("batch_norm", "x", BN_X, True, None),
    ("batch_norm", "x", r"\frac{\gamma_{c}}{N S \sqrt{\epsilon + \sigma^{2}_{c}}} \left(N S g_{ncs} - \hat{x}_{ncs} "
     r"\sum_{n'} \sum_{s'} g_{n'cs'} \hat{x}_{n'cs'} - \sum_{n'} \sum_{s'} g_{n'cs'}\right)", True, None),
    ("batch_norm", "x", r"\gamma_c \rho_c \left(g_{ncs} - \frac{1}{NS}\sum_n\sum_s g_{ncs} - \frac{\hat{x}_{ncs}}{N S}"
     r"\sum_n\sum_s g_{ncs}\hat{x}_{ncs}\right)", True, None),
    ("batch_norm", "x", r"\frac{\gamma_c}{\sqrt{\sigma_c^2 + \varepsilon}}\left(g_{ncs} - \frac{1}{N S}\sum_{n,s} g_{ncs}"
     r"\right) - \frac{\gamma_c \tilde{x}_{ncs}}{N S (\sigma^2_c + \epsilon)^{3/2}} \sum_n \sum_s g_{ncs} \tilde{x}_{ncs}",
     True, None),
    ("batch_norm", None, r"\frac{\partial E}{\partial \vec{x}} = \frac{\gamma}{N S \sqrt{\epsilon + \sigma^{2}}} \left(N S "
     r"\vec{g} - \left(\vec{g}^{T} \hat{\vec{x}}\right) \hat{\vec{x}} - \left(\mathbf{1}^{T} \vec{g}\right) "
     r"\mathbf{1}\right)", True, None),
    ("batch_norm", "x", r"\gamma \rho (\vec{g} - \frac{1}{N S}(\mathbf{1}^T \vec{g}) \mathbf{1} - \frac{1}{N S}"
     r"(\vec{\hat{x}}^T \vec{g}) \vec{\hat{x}})", True, None),
    ("batch_norm", "x", "gamma[c]*rstd[c]*(g[n,c,s] - sum(sum(g[n,c,s], n), s)/(N*S) "
     "- xhat[n,c,s]*sum(sum(g[n,c,s]*xhat[n,c,s], n), s)/(N*S))", True, None),
    ("batch_norm", "x", r"\frac{\gamma_c}{N S\sqrt{\sigma^2_c+\epsilon}}\left(N S g_{ncs} - \sum_n\sum_s g_{ncs}\right)",
     False, "a term missing: - \\frac{\\gamma_{c} \\hat{x}_{ncs}}"),
    ("batch_norm", "x", r"\frac{\gamma_c}{N S\sqrt{\sigma^2_c+\epsilon}}\left(N S g_{ncs} - \sum_n\sum_s g_{ncs} + "
     r"\hat{x}_{ncs}\sum_n\sum_s g_{ncs}\hat{x}_{ncs}\right)", False, "sign of a term"),
    ("batch_norm", "x", r"\frac{\gamma_c}{\sqrt{\sigma^2_c+\epsilon}}\left(N S g_{ncs} - \sum_n\sum_s g_{ncs} - "
     r"\hat{x}_{ncs}\sum_n\sum_s g_{ncs}\hat{x}_{ncs}\right)", False, "missing a factor 1/(N S)"),
    ("batch_norm", "x", r"\frac{\gamma_c}{N\sqrt{\sigma^2_c+\epsilon}}\left(N S g_{ncs} - \sum_n\sum_s g_{ncs} - "
     r"\hat{x}_{ncs}\sum_n\sum_s g_{ncs}\hat{x}_{ncs}\right)", False, "missing a factor 1/S"),
    ("batch_norm", "x", r"\frac{\gamma_c}{N\sqrt{\sigma^2_c+\epsilon}}\left(N g_{ncs} - \sum_n\sum_s g_{ncs} - "
     r"\hat{x}_{ncs}\sum_n\sum_s g_{ncs}\hat{x}_{ncs}\right)", False, "N should be N S"),
    ("batch_norm", "x", r"\frac{\gamma_c}{N S\sqrt{\sigma^2_c+\epsilon}}\left(N S g_{ncs} - \sum_n\sum_s g_{ncs} - "
     r"\hat{x}_{ncs}\sum_n g_{ncs}\hat{x}_{ncs}\right)", False, None),
    ("batch_norm", "x", r"\gamma_c \rho_c g_{ncs}", False, "two terms missing"),  # mean and variance taken as constants
    ("batch_norm", "gamma", r"\sum_n \sum_s g_{ncs} \hat{x}_{ncs}", True, None),
    ("batch_norm", "gamma", r"\vec{g}^{T} \hat{\vec{x}}", True, None),
    ("batch_norm", "gamma", r"\sum_n \sum_s g_{ncs} \tilde{x}_{ncs} \rho_c", True, None),
    ("batch_norm", "gamma", r"\sum_n \sum_s \frac{g_{ncs} (x_{ncs} - \mu_c)}{\sqrt{\sigma^{2}_{c} + \epsilon}}", True, None),
    ("batch_norm", "gamma", r"\sum_n \sum_s g_{ncs} x_{ncs}", False, None),
    ("batch_norm", "gamma", r"\sum_n g_{ncs} \hat{x}_{ncs}", False, "missing sum over s"),
    ("batch_norm", "beta", r"\sum_n \sum_s g_{ncs}", True, None),
    ("batch_norm", "beta", r"\mathbf{1}^{T} \vec{g}", True, None),
    ("batch_norm", "beta", r"\sum_n g_{ncs}", False, "missing sum over s"),
    # batch norm at inference: running statistics are inputs
    ("batch_norm_eval", "x", r"g_{ncs} \gamma_c \rho_c", True, None),
    ("batch_norm_eval", "x", r"\frac{\gamma_c g_{ncs}}{\sqrt{\bar{\sigma}^{2}_{c} + \epsilon}}", True, None),
    ("batch_norm_eval", "x", r"\frac{\gamma_c g_{ncs}}{\sqrt{\mathrm{running\_var}_c + \epsilon}}", True, None),
    ("batch_norm_eval", "x", "gamma[c]*g[n,c,s]/sqrt(running_var[c] + eps)", True, None),
    ("batch_norm_eval", "x", r"\gamma \rho \vec{g}", True, None),
    ("batch_norm_eval", "x", r"g_{ncs} \gamma_c", False, "missing the factor \\rho_{c}"),
    ("batch_norm_eval", "x", r"\gamma_c \rho_c \left(g_{ncs} - \frac{1}{N S}\sum_n\sum_s g_{ncs} - \frac{\hat{x}_{ncs}}{N S}"
     r"\sum_n\sum_s g_{ncs}\hat{x}_{ncs}\right)", False, None),
    ("batch_norm_eval", "gamma", r"\sum_n \sum_s g_{ncs} (x_{ncs} - \bar{\mu}_c) \rho_c", True, None),
    ("batch_norm_eval", "gamma", r"\sum_n \sum_s g_{ncs} \hat{x}_{ncs}", True, None),
    ("batch_norm_eval", "gamma", r"\sum_n \sum_s g_{ncs} x_{ncs} \rho_c", False, None),
    ("batch_norm_eval", "beta", r"\sum_n \sum_s g_{ncs}", True, None),
    # layer norm: each row by its own statistics; gamma inside the sums
    ("layer_norm", "x", r"\frac{1}{D\sqrt{\sigma^2_n+\epsilon}}\left(D g_{nd}\gamma_d - \sum_{d'} g_{nd'}\gamma_{d'} - "
     r"\hat{x}_{nd}\sum_{d'} g_{nd'}\gamma_{d'}\hat{x}_{nd'}\right)", True, None),
    ("layer_norm", "x", r"\rho_n \left(g_{nd}\gamma_d - \frac{1}{D}\sum_{k} g_{nk}\gamma_{k} - \frac{\hat{x}_{nd}}{D}"
     r"\sum_{k} g_{nk}\gamma_{k}\hat{x}_{nk}\right)", True, None),
    ("layer_norm", "x", r"\frac{1}{D \sqrt{\epsilon + \sigma^{2}}} \left(D \vec{g} \odot \vec{\gamma} - \left(\vec{\gamma}^{T}"
     r" \left(\vec{g} \odot \hat{\vec{x}}\right)\right) \hat{\vec{x}} - \left(\vec{\gamma}^{T} \vec{g}\right) "
     r"\mathbf{1}\right)", True, None),
    ("layer_norm", "x", r"\frac{\gamma_d}{D\sqrt{\sigma^2_n+\epsilon}}\left(D g_{nd} - \sum_{d'} g_{nd'} - "
     r"\hat{x}_{nd}\sum_{d'} g_{nd'}\hat{x}_{nd'}\right)", False, None),
    ("layer_norm", "x", r"\frac{1}{D\sqrt{\sigma^2_n+\epsilon}}\left(D g_{nd}\gamma_d - \sum_{d'} g_{nd'}\gamma_{d'}"
     r"\right)", False, "a term missing"),
    ("layer_norm", "x", r"\frac{1}{\sqrt{\sigma^2_n+\epsilon}}\left(D g_{nd}\gamma_d - \sum_{d'} g_{nd'}\gamma_{d'} - "
     r"\hat{x}_{nd}\sum_{d'} g_{nd'}\gamma_{d'}\hat{x}_{nd'}\right)", False, "1/D"),
    ("layer_norm", "gamma", r"\sum_n g_{nd} \hat{x}_{nd}", True, None),
    ("layer_norm", "gamma", r"\sum_{n} \vec{g} \odot \hat{\vec{x}}", True, None),
    ("layer_norm", "gamma", r"\sum_d g_{nd} \hat{x}_{nd}", False, "wrong index"),
    ("layer_norm", "beta", r"\sum_n g_{nd}", True, None),
    ("layer_norm", "beta", r"\sum_n \vec{g}", True, None),
    ("layer_norm", "beta", r"\sum_d g_{nd}", False, "wrong index"),
    # the activations people write about now: through sigma, Phi and phi, erf and tanh written out
    ("silu", "x", r"g_i \sigma(x_i)(1 + x_i(1 - \sigma(x_i)))", True, None),
    ("silu", "x", r"g_i \sigma(x_i)(1 + x_i - y_i)", True, None),  # through y = x σ(x)
    ("silu", "x", r"\vec{g} \odot \sigma(\vec{x}) \odot (1 + \vec{x} \odot (1 - \sigma(\vec{x})))", True, None),
    ("silu", "x", "g[i]*sigmoid(x[i])*(1 + x[i]*(1 - sigmoid(x[i])))", True, None),
    ("silu", "x", r"g_i \sigma(x_i)", False, r"missing the factor 1 + x_{i} \left(1 - \sigma"),  # x a constant
    ("silu", "x", r"g_i \sigma(x_i)(1 - \sigma(x_i))", False, None),  # σ's derivative alone
    ("gelu", "x", r"g_i (\Phi(x_i) + x_i \varphi(x_i))", True, None),
    ("gelu", "x", r"g_i \left(\frac{1}{2}\left(1 + \operatorname{erf}\frac{x_i}{\sqrt{2}}\right) "
     r"+ \frac{x_i}{\sqrt{2 \pi}} e^{-x_i^2/2}\right)", True, None),
    ("gelu", "x", "g[i]*(Phi(x[i]) + x[i]*phi(x[i]))", True, None),
    ("gelu", "x", r"g_i \Phi(x_i)", False, r"a term missing: g_{i} x_{i} \varphi"),  # the product rule forgotten
    ("gelu", "x", r"g_i (\Phi(x_i) - x_i \varphi(x_i))", False, "sign of a term"),
    ("gelu", "x", r"g_i \left(\Phi(x_i) + \frac{x_i}{\sqrt{2 \pi}} e^{-x_i^2}\right)", False, "one term is wrong"),
    ("gelu_tanh", "x", r"g_i \left(\frac{1}{2}(1 + \tanh u_i) + \frac{1}{2} x_i (1 - \tanh^2 u_i) \sqrt{\frac{2}{\pi}}"
     r"(1 + 0.134145 x_i^2)\right)", True, None),
    ("gelu_tanh", "x", r"g_i \left(\frac{1}{2}(1 + \tanh u_i) + \frac{1}{2} x_i (1 - \tanh^2 u_i)\right)", False,
     "one term is wrong"),  # u's own derivative forgotten
    ("gelu_tanh", "x", r"g_i \left(\frac{1}{2}(1 + \tanh u_i) + \frac{1}{2} x_i (1 - \tanh^2 u_i) \sqrt{\frac{2}{\pi}}"
     r"(1 + 0.044715 x_i^2)\right)", False, "one term is wrong"),  # 3 a x^2 written a x^2
    ("softplus", "x", r"g_i \sigma(\beta x_i)", True, None),
    ("softplus", "x", r"\frac{g_i}{1 + e^{-\beta x_i}}", True, None),
    ("softplus", "x", r"g_i \sigma(x_i)", False, r"right only at \beta = 1"),
    ("softplus", "x", r"\beta g_i \sigma(\beta x_i)", False, r"a factor \beta too many"),  # the 1/β forgotten
    ("elu", "x", r"g_i [x_i > 0] + \alpha g_i e^{x_i} [x_i \le 0]", True, None),
    ("elu", "x", r"g_i [x_i > 0] + g_i (y_i + \alpha) [x_i \le 0]", True, None),  # PyTorch's form, through y
    ("elu", "x", r"g_i [x_i > 0] + g_i e^{x_i} [x_i \le 0]", False, r"right only at \alpha = 1"),
    ("elu", "x", r"g_i [x_i > 0] + \alpha g_i [x_i \le 0]", False, "one term is wrong"),
    ("prelu", "x", r"g_{ncs}[x_{ncs} > 0] + a_c g_{ncs}[x_{ncs} \le 0]", True, None),
    ("prelu", "a", r"\sum_n \sum_s g_{ncs} x_{ncs}[x_{ncs} \le 0]", True, None),
    ("prelu", "a", r"\sum_n \sum_s g_{ncs} x_{ncs}", False, "is missing: it is 1 only where"),
    ("prelu", "a", r"\sum_n g_{ncs} x_{ncs}[x_{ncs} \le 0]", False, "missing sum over s"),
    # log-softmax and the binary losses
    ("log_softmax", "x", r"g_{nk} - p_{nk} \sum_j g_{nj}", True, None),
    ("log_softmax", "x", r"g_{nk} - \frac{e^{x_{nk}}}{\sum_j e^{x_{nj}}} \sum_j g_{nj}", True, None),
    ("log_softmax", "x", r"g_{nk} - e^{y_{nk}} \sum_j g_{nj}", True, None),  # PyTorch's form, through y
    ("log_softmax", "x", r"\vec{g} - (\mathbf{1}^{T} \vec{g}) \vec{p}", True, None),
    ("log_softmax", "x", r"g_{nk} (1 - p_{nk})", False, "one term is wrong"),  # only the diagonal of the Jacobian
    ("log_softmax", "x", r"g_{nk} + p_{nk} \sum_j g_{nj}", False, "sign of a term"),
    ("bce_with_logits", "z", r"\frac{1}{N}(\sigma(z_n) - t_n)", True, None),
    ("bce_with_logits", "z", "(sigmoid(z[n]) - t[n])/N", True, None),
    ("bce_with_logits", "z", r"\sigma(z_n) - t_n", False, "missing a factor 1/N"),
    ("bce_with_logits", "z", r"\frac{1}{N}(t_n - \sigma(z_n))", False, "sign"),
    ("bce_with_logits", "z", r"\frac{1}{N}(\sigma(z_n) - t_n) \sigma(z_n)(1 - \sigma(z_n))", False,
     "an extra activation-derivative factor"),  # σ' applied again, as if z were the probability
    ("binary_cross_entropy", "y", r"\frac{y_n - t_n}{N y_n (1 - y_n)}", True, None),
    ("binary_cross_entropy", "y", r"\frac{1}{N}\left(\frac{1 - t_n}{1 - y_n} - \frac{t_n}{y_n}\right)", True, None),
    ("binary_cross_entropy", "y", r"\frac{1}{N}(y_n - t_n)", False, "missing the factor"),  # the logits' gradient
    ("binary_cross_entropy", "y", r"\frac{1}{N}\left(-\frac{1 - t_n}{1 - y_n} - \frac{t_n}{y_n}\right)", False,
     "sign of a term"),
    ("huber", "y", r"\frac{1}{N}\begin{cases} y_n - t_n & |y_n - t_n| < \delta \\ "
     r"\delta \operatorname{sign}(y_n - t_n) & \text{otherwise} \end{cases}", True, None),
    ("huber", "y", r"\frac{1}{N}\left((y_n - t_n)\left[\left|y_n - t_n\right| \le \delta\right] + \delta "
     r"\operatorname{sgn}(y_n - t_n)\left[\left|y_n - t_n\right| > \delta\right]\right)", True, None),
    ("huber", "y", "((y[n] - t[n])*(abs(y[n] - t[n]) < delta) + delta*sign(y[n] - t[n])*(abs(y[n] - t[n]) >= delta))/N",
     True, None),
    ("huber", "y", r"\frac{1}{N}\begin{cases} y_n - t_n & |y_n - t_n| < \delta \\ "
     r"\operatorname{sign}(y_n - t_n) & \text{otherwise} \end{cases}", False, r"right only at \delta = 1"),
    ("huber", "y", r"\frac{1}{N}(y_n - t_n)", False, r"right only at \delta = 1"),  # the linear part forgotten
    # RMS norm: layer norm without the mean
    ("rms_norm", "x", r"\rho_n \left(g_{nd}\gamma_d - \frac{\hat{x}_{nd}}{D} \sum_e g_{ne}\gamma_e \hat{x}_{ne}\right)",
     True, None),
    ("rms_norm", "x", r"\frac{\gamma_d g_{nd}}{\sqrt{\frac{1}{D}\sum_e x_{ne}^2 + \epsilon}} - \frac{x_{nd}\sum_e g_{ne}"
     r"\gamma_e x_{ne}}{D (\frac{1}{D}\sum_e x_{ne}^2 + \epsilon)^{3/2}}", True, None),
    ("rms_norm", "x", r"\frac{\rho}{D} \left(D \vec{g} \odot \vec{\gamma} - \left(\vec{\gamma}^{T} \left(\vec{g} \odot "
     r"\hat{\vec{x}}\right)\right) \hat{\vec{x}}\right)", True, None),
    ("rms_norm", "x", r"\rho_n g_{nd} \gamma_d", False, "a term missing"),  # the root mean square taken as a constant
    ("rms_norm", "x", r"\rho_n \left(g_{nd}\gamma_d - \hat{x}_{nd} \sum_e g_{ne}\gamma_e \hat{x}_{ne}\right)", False,
     "one term is wrong"),  # the mean's 1/D forgotten
    ("rms_norm", "gamma", r"\sum_n g_{nd} \hat{x}_{nd}", True, None),
    ("rms_norm", "gamma", r"\sum_d g_{nd} \hat{x}_{nd}", False, "wrong index"),
    # a recurrent cell: its error term delta = dE/da named, the tanh's derivative forgotten
    ("rnn_cell", "W_ih", r"\delta^T X", True, None),
    ("rnn_cell", "W_ih", r"\sum_n g_{nk} x_{nd}", False, "missing the factor 1 - {h'_{nk}}^{2}"),
    ("rnn_cell", "W_hh", r"h^T \delta", False, "transposed"),
    # gated cells: each gate's error term written out; a forgotten gate derivative; the cell state's own gradient
    ("gru_cell", "da_z", r"g_{nk} (h_{nk} - \tilde{h}_{nk}) z_{nk}(1 - z_{nk})", True, None),
    ("gru_cell", "da_z", r"g_{nk} (h_{nk} - \tilde{h}_{nk})", False, r"missing the factor z_{nk} \left(1 - z_{nk}\right)"),
    ("gru_cell", "da_n", r"g_{nk} (1 - z_{nk}) (1 - \tilde{h}_{nk}^2)", True, None),
    ("gru_cell", "da_n", r"g_{nk} (1 - z_{nk})", False, r"missing the factor 1 - \tilde{h}_{nk}^{2}"),
    ("lstm_cell", "da_o", r"g_{nk} \tanh(c'_{nk}) o_{nk}(1 - o_{nk})", True, None),
    ("lstm_cell", "da_o", r"g_{nk} \tanh(c'_{nk})", False, r"missing the factor o_{nk} \left(1 - o_{nk}\right)"),
    ("lstm_cell", "dcn", r"g_{nk} o_{nk} (1 - \tanh^2(c'_{nk})) + g^{c'}_{nk}", True, None),
    ("lstm_cell", "dcn", r"g_{nk} o_{nk} (1 - \tanh^2(c'_{nk}))", False, r"a term missing: g^{c'}_{nk}"),
    ("lstm_cell", "c", r"\delta^{c'}_{nk} f_{nk}", True, None),
    ("lstm_cell", "c", r"\delta^{c'}_{nk}", False, "missing the factor f_{nk}"),
    # embedding: a row's gradient sums the positions that selected it
    ("embedding", "W", r"\sum_n [idx_n = v] g_{nd}", True, None),
    ("embedding", "W", r"\sum_n [v = idx_{n}] g_{nd}", True, None),
    ("embedding", "W", r"\frac{1}{N}\sum_n [idx_n = v] g_{nd}", False, "1/N"),
    # flatten: element S c + h of a row is channel c's value h, read back the same way
    ("flatten", "x", r"g_{n, S c + h}", True, None),
    ("flatten", "x", r"g_{n, C h + c}", False, None),
    # group norm: channel w = K h + q of group h, the batch norm form within each sample's group
    ("group_norm", "beta", r"\sum_n \sum_h \sum_s [0 \le w - K h \le K - 1] g_{n,h,w - K h,s}", True, None),
    ("group_norm", "x", GN_X, True, None),
    ("group_norm", "x", GN_X.replace(r" - \hat{x}_{n,h,w-Kh,s} \sum_q \gamma_{Kh+q} \sum_{s'} g_{nhqs'} \hat{x}_{nhqs'}", ""),
     False, "a term missing"),
    # attention (the literature's dV = P^T dY, dQ = dS K / sqrt(D), dK = dS^T Q / sqrt(D) with
    # dS = P (dP - rowsum(dP P)), dP = dY V^T, written out) and its usual mistakes: P dY, a missing 1/sqrt(D)
    ("attention", "v", r"\sum_l p_{nls} g_{nle}", True, None),
    ("attention", "v", r"\sum_l p_{nsl} g_{nle}", False, "transposed index: p_{nsl} should be p_{nls}"),
    ("attention", "q", r"\frac{1}{\sqrt{D}} \sum_s p_{nls} \left(\sum_e g_{nle} v_{nse} - \sum_r p_{nlr} "
     r"\sum_e g_{nle} v_{nre}\right) k_{nsd}", True, None),
    ("attention", "q", r"\frac{1}{\sqrt{D}} \sum_s p_{nls} \left(\sum_e g_{nle} v_{nse} - \sum_e g_{nle} y_{nle}\right) "
     r"k_{nsd}", True, None),
    ("attention", "q", r"\sum_s p_{nls} \left(\sum_e g_{nle} v_{nse} - \sum_e g_{nle} y_{nle}\right) k_{nsd}", False,
     r"missing the factor \frac{1}{\sqrt{D}}"),
    ("attention", "k", r"\frac{1}{\sqrt{D}} \sum_l p_{nls} \left(\sum_e g_{nle} v_{nse} - \sum_e g_{nle} y_{nle}\right) "
     r"q_{nld}", True, None),
    ("attention", "k", r"\sum_l p_{nls} \left(\sum_e g_{nle} v_{nse} - \sum_e g_{nle} y_{nle}\right) q_{nld}", False,
     r"missing the factor \frac{1}{\sqrt{D}}"),
    ("attention", "v", r"\sum_l p_{nls} g_{nle} [s \le l]", False, None),  # the causal form's mask, in the default's
    # convolution and pooling: strided, padded windows; range brackets
    ("conv2d", "b", r"\sum_n \sum_i \sum_j \delta_{noij}", True, None),
    ("conv2d", "b", "sum(sum(sum(delta[n,o,i,j], n), i), j)", True, None),
    ("conv2d", "b", r"\sum_n \sum_i \delta_{noij}", False, "missing sum over j"),
    ("conv2d", "W", r"\sum_n \sum_i \sum_j \delta_{noij} \sum_g [0 \le o - g O_g \le O_g - 1] \bar{x}_{n,g C_g + c,i s_H + p d_H,j s_W + q d_W}", True, None),
    ("conv2d", "W", r"\sum_{n,i,j} \delta_{noij} \sum_g [0 \le o - g O_g \le O_g - 1] x_{n, g C_g + c, i s_H + p d_H - P_H, j s_W + q d_W - P_W} [0 \le i s_H + p d_H - P_H \le H - 1] "
     r"[0 \le j s_W + q d_W - P_W \le W - 1]", True, None),
    ("conv2d", "W", "sum(sum(sum(delta[n,o,i,j]*sum((0 <= o - g*O/groups <= O/groups - 1)*xp[n, g*C/groups + c, i*s_H + p*d_H, j*s_W + q*d_W], g), n), i), j)", True, None),
    ("conv2d", "W", r"\sum_n \sum_i \sum_j \delta_{noij} \sum_g [0 \le o - g O_g \le O_g - 1] \bar{x}_{n,g C_g + c,i + p d_H,j + q d_W}", False, "s_H = s_W = 1"),  # no stride
    ("conv2d", "W", r"\sum_n \sum_i \sum_j \delta_{noij} \sum_g [0 \le o - g O_g \le O_g - 1] \bar{x}_{n,g C_g + c,p d_H,q d_W}", False, "s_H = s_W = 0"),  # p over K and H
    ("conv2d", "W", r"\frac{1}{N} \sum_n \sum_i \sum_j \delta_{noij} \sum_g [0 \le o - g O_g \le O_g - 1] \bar{x}_{n,g C_g + c,i s_H + p d_H,j s_W + q d_W}", False, "1/N"),
    ("conv2d", "x", CONV_X, True, None),
    ("conv2d", "x", r"\sum_g [0 \le c - g C_g \le C_g - 1] \sum_o [0 \le o - g O_g \le O_g - 1] \sum_i \sum_j \delta_{noij} w_{o,c - g C_g,(h + P_H - i s_H)/d_H,(w + P_W - j s_W)/d_W} "
     r"[0 \le (h + P_H - i s_H)/d_H \le K_H - 1] [0 \le (w + P_W - j s_W)/d_W \le K_W - 1] "
     r"[(h + P_H - i s_H) \bmod d_H = 0] [(w + P_W - j s_W) \bmod d_W = 0]", True, None),
    # the dilation left out: right at dilation 1 only
    ("conv2d", "x", r"\sum_g [0 \le c - g C_g \le C_g - 1] \sum_o [0 \le o - g O_g \le O_g - 1] \sum_i \sum_j \delta_{noij} w_{o,c - g C_g,h + P_H - i s_H,w + P_W - j s_W} [0 \le h + P_H - i s_H \le K_H - 1]"
     r" [0 \le w + P_W - j s_W \le K_W - 1]", False, "d_H = d_W = 1"),
    ("conv2d", "W", r"\sum_n \sum_i \sum_j \delta_{noij} \sum_g [0 \le o - g O_g \le O_g - 1] \bar{x}_{n,g C_g + c,i s_H + p,j s_W + q}", False, "d_H = d_W = 1"),
    ("conv2d", "x", "-" + CONV_X, False, "sign"),
    # groups left out (every input channel read, W's channel index c over all C): right at groups = 1 only,
    # and c runs over C_g in dE/dw, over C in \bar{x}
    ("conv2d", "W", r"\sum_n \sum_i \sum_j \delta_{noij} \bar{x}_{n,c,i s_H + p d_H,j s_W + q d_W}", False, None),
    ("conv2d", "x", r"\sum_{o} \sum_{i} \sum_{j} \delta_{noij} w_{o,c,h + P_H - i s_H,P_W + w - j s_W}", False, "outside its range"),
    ("avg_pool2d", "x", r"\frac{1}{K_H K_W} \sum_{i} \left[0 \leq h + P_H - i s_H \leq K_H - 1\right] \sum_{j} g_{ncij} "
     r"\left[0 \leq w + P_W - j s_W \leq K_W - 1\right]", True, None),
    ("avg_pool2d", "x", "sum(sum(g[n,c,i,j]*(0 <= h + P_H - i*s_H <= K_H - 1)*(0 <= w + P_W - j*s_W <= K_W - 1), i), j)"
     "/(K_H*K_W)", True, None),
    # the padding left out: right at padding 0 only
    ("avg_pool2d", "x", r"\frac{1}{K_H K_W} \sum_{i} \sum_{j} g_{ncij} [0 \le h - i s_H \le K_H - 1] [0 \le w - j s_W \le K_W - 1]",
     False, "P_H = P_W = 0"),
    ("avg_pool2d", "x", r"\sum_{i} \sum_{j} g_{ncij} [0 \le h + P_H - i s_H \le K_H - 1] [0 \le w + P_W - j s_W \le K_W - 1]",
     False, "missing the factor \\frac{1}{K_H K_W}"),
    ("avg_pool2d", "x", r"\frac{1}{K_H K_W} \sum_{i} \sum_{j} g_{ncij}", False, None),
    # count_include_pad=False: each window divided by its cells inside the image, kappa_{ij}
    ("avg_pool2d[count_include_pad=False]", "x", r"\sum_{i} [0 \le h + P_H - i s_H \le K_H - 1] \sum_{j} "
     r"\frac{g_{ncij}}{\kappa_{ij}} [0 \le w + P_W - j s_W \le K_W - 1]", True, None),
    ("avg_pool2d[count_include_pad=False]", "x", r"\frac{1}{K_H K_W} \sum_{i} [0 \le h + P_H - i s_H \le K_H - 1] \sum_{j} "
     r"g_{ncij} [0 \le w + P_W - j s_W \le K_W - 1]", False, "right only at P_H = 0, P_W = 0"),
    ("max_pool2d", "x", r"\sum_{i} \left[0 \leq \frac{h + P_H - i s_H}{d_H} \leq K_H - 1\right] \left[(h + P_H - i s_H) \bmod d_H = 0\right] "
     r"\sum_{j} g_{ncij} mask_{n,c,i,j,\frac{h + P_H - i s_H}{d_H},\frac{w + P_W - j s_W}{d_W}} "
     r"\left[0 \leq \frac{w + P_W - j s_W}{d_W} \leq K_W - 1\right] \left[(w + P_W - j s_W) \bmod d_W = 0\right]", True, None),
    # the dilation left out: right at dilation 1 only
    ("max_pool2d", "x", r"\sum_i \sum_j g_{ncij} \, \mathrm{mask}_{n, c, i, j, h + P_H - i s_H, w + P_W - j s_W} "
     r"[0 \le h + P_H - i s_H \le K_H - 1] [0 \le w + P_W - j s_W \le K_W - 1]", False, "d_H = d_W = 1"),
    ("max_pool2d", "x", r"\sum_{i} \sum_{j} g_{ncij} [0 \le h - i s_H \le K_H - 1] [0 \le w - j s_W \le K_W - 1]", False, None),
    # dropout with an explicit mask
    ("dropout", "x", r"g_i mask_i/(1-p)", True, None),
    ("dropout", "x", r"\frac{g_i \, \mathrm{mask}_i}{1 - p}", True, None),
    ("dropout", "x", r"\frac{1}{1-p} \vec{g} \odot \vec{mask}", True, None),
    ("dropout", "x", "g[i]*mask[i]/(1 - p)", True, None),
    ("dropout", "x", r"g_i mask_i", False, "missing the factor \\frac{1}{1 - p}"),
    ("dropout", "x", r"\frac{g_i}{1-p}", False, "missing the factor mask_{i}"),
    ("tanh", "x", r"g_i (1 - \tanh^2(x_i))", True, None),
    ("tanh", "x", r"g_i (1 - \tanh(x_i)^2)", True, None),
    ("tanh", "x", r"g_i", False, "activation derivative"),
    ("relu", "x", r"g_i [x_i > 0]", True, None),
    ("relu", "x", r"\begin{cases} g_i & x_i > 0 \\ 0 & \text{otherwise}\end{cases}", True, None),
    ("relu", "x", r"g_i [x_i \geq 0]", False, "kink"),
    ("relu", "x", r"g_i", False, "activation derivative"),
    ("leaky_relu", "x", r"\begin{cases} g_i & x_i > 0 \\ \alpha g_i & \text{otherwise} \end{cases}", True, None),
    ("leaky_relu", "x", r"g_i [x_i > 0] + \alpha g_i [x_i \le 0]", True, None),
    ("leaky_relu", "x", r"\begin{cases} g_i & x_i > 0 \\ 0 & \text{otherwise} \end{cases}", False, None),
    ("softmax", "x", r"y_{nk}(g_{nk} - \sum_j g_{nj} y_{nj})", True, None),
    ("softmax", "x", r"y_{nk} g_{nk} - y_{nk}\sum_{k'} g_{nk'} y_{nk'}", True, None),
    ("softmax", "x", r"Y \odot (G - (G \odot Y)\mathbf{1}\mathbf{1}^T)", True, None),
    ("softmax", "x", r"\vec{y} \odot \left(\vec{g} - \left(\vec{g}^{T} \vec{y}\right) \mathbf{1}\right)", True, None),
    ("softmax", "x", r"y_{nk}(g_{nk} - \sum_j g_{nj})", False, None),
    # losses
    ("half_sse", "y", r"\frac{1}{N}(y_{nk} - t_{nk})", True, None),
    ("half_sse", "y", r"\frac{y_{nk} - t_{nk}}{N}", True, None),
    ("half_sse", "y", r"\frac{1}{N}(Y - T)", True, None),
    ("half_sse", "y", r"y_k - t_k", True, None),
    ("half_sse", "y", r"y_{nk} - t_{nk}", False, "1/N"),
    ("half_sse", "y", r"\frac{1}{N}(t_{nk} - y_{nk})", False, "sign"),
    ("mse", "y", r"\frac{2}{S}(y_i - t_i)", True, None),
    ("mse", "y", "2*(y[i] - t[i])/S", True, None),
    ("mse", "y", r"\frac{1}{S}(y_i - t_i)", False, "factor 2"),
    ("cross_entropy", "y", r"-\frac{t_{nk}}{N y_{nk}}", True, None),
    ("cross_entropy", "y", r"-\frac{1}{N} T \oslash Y", True, None),
    ("cross_entropy", "y", r"-\frac{t_{nk}}{y_{nk}}", False, "1/N"),
    ("softmax_cross_entropy", "z", r"\frac{1}{N}(y_{nk} - t_{nk})", True, None),
    ("softmax_cross_entropy", "z", r"\frac{1}{N}\left(\frac{e^{z_{nk}}}{\sum_j e^{z_{nj}}} - t_{nk}\right)", True, None),
    ("softmax_cross_entropy", "z", r"\frac{1}{N}(y_{nk}\sum_j t_{nj} - t_{nk})", True, None),
    ("softmax_cross_entropy", "z", r"y_{nk} - t_{nk}", False, "1/N"),
    ("softmax_cross_entropy", "z", r"\frac{1}{N}(t_{nk} - y_{nk})", False, "sign"),
    # integer class labels: the one-hot row [k = t_n] in place of t_{nk}, the samples labelled ignore_index left out
    ("softmax_cross_entropy[target=labels]", "z",
     r"\frac{[t_n \neq \text{ignore}]}{\sum_m [t_m \neq \text{ignore}]}(y_{nk} - [k = t_n])", True, None),
    ("softmax_cross_entropy[target=labels]", "z", r"\frac{[t_n \neq \text{ignore}]}{\sum_m [t_m \neq \text{ignore}]}"
     r"\left(\frac{e^{z_{nk}}}{\sum_j e^{z_{nj}}} - [k = t_n]\right)", True, None),
    ("softmax_cross_entropy[target=labels]", "z", r"\frac{[t_n \neq \text{ignore}]}{\sum_m [t_m \neq \text{ignore}]}"
     r"([k = t_n] - y_{nk})", False, "sign"),
    ("cross_entropy[target=labels]", "y", r"-\frac{[t_n \neq \text{ignore}] [k = t_n]}{y_{nk} \sum_m [t_m \neq \text{ignore}]}",
     True, None),
    ("cross_entropy[target=labels, reduction=sum]", "y", r"-\frac{[k = t_n]}{y_{nk}}", False, r"t_{n} \neq"),
    # a weight per class and ignore_index: the bracket [t_n != ignore] in the sum, the mean over the weights kept
    ("cross_entropy[target=labels, weight=given]", "y",
     r"-\frac{[t_n \neq \text{ignore}] w_k [k = t_n]}{y_{nk} \sum_m [t_m \neq \text{ignore}] \sum_j w_j [j = t_m]}", True, None),
    ("cross_entropy[target=labels, weight=given]", "y",
     r"-\frac{w_k [k = t_n]}{y_{nk} \sum_m [t_m \neq \text{ignore}] \sum_j w_j [j = t_m]}", False, r"t_{n} \neq"),
    ("softmax_cross_entropy[target=labels, weight=given]", "z",
     r"\frac{[t_n \neq \text{ignore}]}{\sum_{m} [t_m \neq \text{ignore}] \sum_k w_k [k = t_m]} (y_{nk} \sum_j w_j [j = t_n] "
     r"- w_k [k = t_n])", True, None),
    ("softmax_cross_entropy[target=labels]", "z", r"\frac{1}{N} (y_{nk} - [k = t_n])", False, None),  # ignored samples
    # soft targets whose rows need not sum to 1: the gradient that holds in general
    ("softmax_cross_entropy[target=unnormalized]", "z", r"\frac{1}{N}(y_{nk}\sum_j t_{nj} - t_{nk})", True, None),
    ("softmax_cross_entropy[target=unnormalized]", "z", r"\frac{1}{N}(y_{nk} - t_{nk})", False, r"\sum_{j} t_{nj}"),
    # the gradient with respect to the target (t_grad=True), where PyTorch has one
    ("mse[t_grad=True]", "t", r"\frac{2}{S}(t_i - y_i)", True, None),
    ("mse[t_grad=True]", "t", r"\frac{2}{S}(y_i - t_i)", False, "sign"),
    ("half_sse[t_grad=True]", "t", r"\frac{1}{N}(t_{nk} - y_{nk})", True, None),
    ("huber[t_grad=True]", "t", r"\frac{1}{N}\begin{cases} t_n - y_n & |y_n - t_n| < \delta \\ \delta \operatorname{sign}(t_n - y_n) "
     r"& \text{otherwise} \end{cases}", True, None),
    ("softmax_cross_entropy[t_grad=True]", "t", r"-\frac{1}{N}\log y_{nk}", True, None),
    ("softmax_cross_entropy[t_grad=True]", "t", r"-\log y_{nk}", False, "1/N"),
    ("cross_entropy[t_grad=True]", "t", r"-\frac{\log y_{nk}}{N}", True, None),
    # label smoothing: the smoothed target q = (1 - eps) t + eps/K in place of t
    ("softmax_cross_entropy[smoothed=True]", "z", r"\frac{1}{N} (y_{nk} - (1 - \tilde{\epsilon}) t_{nk} - \frac{\tilde{\epsilon}}{K})", True,
     None),
    ("softmax_cross_entropy[smoothed=True]", "z", r"\frac{1}{N} (y_{nk} - q_{nk})", True, None),
    ("softmax_cross_entropy[smoothed=True]", "z", r"\frac{1}{N} (y_{nk} - t_{nk})", False, "should be"),
    ("softmax_cross_entropy[target=labels, smoothed=True]", "z",
     r"\frac{[t_n \neq \text{ignore}]}{\sum_{m} [t_m \neq \text{ignore}]} (y_{nk} - (1 - \tilde{\epsilon})[k = t_n] - \frac{\tilde{\epsilon}}{K})",
     True, None),
    # the article's network, one sample (the article's form) unless the batch index is written
    (A, "delta_k", r"(y_k - t_k) y_k (1 - y_k)", True, None),
    (A, "delta_k", r"-(t_k - y_k) y_k (1 - y_k)", True, None),
    (A, None, r"\delta_k = \frac{\partial E}{\partial net_k} = (y_k - t_k) y_k (1-y_k)", True, None),
    (A, "delta_k", r"(\vec{y}_2 - \vec{t}) \odot \vec{y}_2 \odot (1 - \vec{y}_2)", True, None),
    (A, "delta_k", r"(t_k - y_k) y_k (1 - y_k)", False, "sign"),
    (A, "delta_k", r"y_k - t_k", False, "activation derivative"),
    (A, "delta_j", r"y_j(1-y_j)\sum_k \delta_k w_{kj}", True, None),
    (A, None, r"\delta_j = y_j(1-y_j)\sum_k \delta_k w_{kj}", True, None),
    (A, "delta_j", r"y_j(1-y_j)\sum_k (y_k - t_k) y_k (1-y_k) w_{kj}", True, None),
    (A, "delta_j", r"\sigma(net_j)(1-\sigma(net_j))\sum_k \delta_k w_{kj}", True, None),
    (A, "delta_j", "y[j]*(1-y[j])*sum(delta[k]*w[k,j], k)", True, None),
    (A, "delta_j", r"(W_2^T \vec{\delta}_2) \odot \vec{y}_1 \odot (1 - \vec{y}_1)", True, None),
    (A, "delta_j", r"y_{nj}(1-y_{nj})\sum_k \delta_{nk} w_{kj}", True, None),
    (A, "delta_j", r"y_j(1-y_j)\sum_k \delta_k w_{jk}", False, "transposed index"),
    (A, "delta_j", r"\sum_k \delta_k w_{kj}", False, "activation derivative"),
    (A, "delta_j", r"y_j(1-y_j)\sum_j \delta_k w_{kj}", False, "wrong index"),
    (A, "delta_j", r"(W_2 \vec{\delta}_2) \odot \vec{y}_1 \odot (1 - \vec{y}_1)", False, "transpose"),
    (A, None, r"\frac{\partial E}{\partial w_{kj}} = \delta_k y_j", True, None),
    (A, "w_kj", "delta[k]*y[j]", True, None),
    (A, "w_kj", r"\vec{\delta}_2 \vec{y}_1^T", True, None),
    (A, "w_kj", r"\delta_j y_k", False, None),
    (A, None, r"\frac{\partial E}{\partial w_{ji}} = \delta_j x_i", True, None),
    (A, "w_ji", r"\frac{1}{N}\sum_n \delta_{nj} x_{ni}", False, "1/N"),
    (A, "b_k", r"\delta_k", True, None),
    (A, "b_j", r"\delta_j", True, None),
    (A, "x_i", r"\sum_j \delta_j w_{ji}", True, None),
    (A, "x_i", r"\sum_j \delta_j w_{ij}", False, "transposed index"),
    # a network with batch norm: its samples are coupled, every batched quantity keeps n
    (BN_CHAIN, "w_kj", r"\sum_n \delta_{nk} y^{(3)}_{nj}", True, None),
    (BN_CHAIN, "delta_nj", r"\frac{\gamma_j \rho_j}{N} \left(N [y_{nj} > 0] \sum_k \delta_{nk} w_{kj} - \hat{x}_{nj} "
     r"\sum_{m} \hat{x}_{mj} [y_{mj} > 0] \sum_k \delta_{mk} w_{kj} - \sum_m [y_{mj} > 0] \sum_k \delta_{mk} w_{kj}\right)",
     True, None),
    (BN_CHAIN, "delta_nj", r"\gamma_j \rho_j [y_{nj} > 0] \sum_k \delta_{nk} w_{kj}", False,
     "two terms missing"),  # as if each sample were on its own
]


def _where(where):
    """A chain, an op, or one form of an op: ``op[option=value, ...]``."""
    if where in (A, BN_CHAIN):
        return {"chain": where}
    name, _, chosen = where.partition("[")
    if not chosen:
        return {"op": where}
    from derive.define.registry import get
    options = dict(pair.split("=") for pair in chosen.rstrip("]").split(", "))
    op = get(name)
    known = {o.name: o for o in op.options}
    return {"op": op.form(**{k: next(c for c in known[k].choices if str(c) == v) for k, v in options.items()})}


def test_a_formula_that_is_zero_gets_no_left_out_hint():
    """With K = 0 every bracket of the derivation is false: it 'explains' any zero formula, and says nothing."""
    verdict = verify("0", op="max_pool2d", wrt="x")
    assert not verdict.equivalent and not any("left out" in h for h in verdict.hints), verdict.report()


@pytest.mark.parametrize("where, text", [(BN_CHAIN, r"\gamma_j \rho_j [y_j > 0] \sum_k \delta_k w_{kj}"),
                                         ("batch_norm", r"\gamma_c \rho_c g_{cs}")])
def test_the_one_sample_form_is_refused_where_batch_norm_couples_the_samples(where, text):
    with pytest.raises(FormulaError, match="couples the samples of a batch: write the batch index n"):
        verify(text, wrt="delta_nj" if where == BN_CHAIN else "x", **_where(where))


@pytest.mark.parametrize("where, wrt, text, right, hint", TABLE, ids=[f"{w}:{t}" for w, _, t, _, _ in TABLE])
def test_table_of_formulas(where, wrt, text, right, hint):
    verdict = verify(text, wrt=wrt, **_where(where))
    assert verdict.equivalent is right, verdict.report()
    assert verdict.exit_code == (0 if right else 1)
    if right:
        assert verdict.proof and verdict.numeric and verdict.counterexample is None
    else:
        assert verdict.counterexample is not None or verdict.reason, verdict.report()
    if hint is not None:
        assert any(hint in h for h in verdict.hints), verdict.report()


def test_table_is_large_and_covers_every_op_and_every_mistake():
    assert len(TABLE) >= 60
    from derive.define.registry import registry
    assert {w for w, *_ in TABLE} >= set(registry()) | {A}
    hints = {h for *_, h in TABLE if h}
    for mistake in ("sign", "transposed index", "activation derivative", "1/N", "wrong index"):
        assert any(mistake in h for h in hints)


def test_a_right_formula_is_proven_for_all_sizes_or_exactly_at_small_ones():
    v = verify(r"y_j(1-y_j)\sum_k \delta_k w_{kj}", chain=A, wrt="delta_j")
    assert "equal for all sizes" in v.proof
    v = verify(r"\sigma(net_j)(1-\sigma(net_j))\sum_k \delta_k w_{kj}", chain=A, wrt="delta_j")
    assert v.proof.startswith("exact at sizes") and "in terms of the inputs" in v.proof


def test_counterexample_is_what_the_generated_code_computes():
    """The counterexample's 'derived' value is the generated backward pass at the inputs it lists."""
    from generated import linear
    v = verify(r"\sum_k \delta_{nk} x_{nj}", op="linear", wrt="W")
    ce = v.counterexample
    x, W, b, delta = (np.array(ce.inputs[name]) for name in ("x_{nj}", "w_{kj}", "b_{k}", r"\delta_{nk}"))
    _, cache = linear.forward(x, W, b)
    grads = linear.backward(delta, cache)
    assert grads["W"][ce.at["k"], ce.at["j"]] == pytest.approx(ce.expected.real, rel=1e-9)
    assert ce.got is not None and abs(ce.got - ce.expected) > 1e-6


def test_api_is_exported_and_result_object_reports():
    v = derive.verify(r"\delta_k y_j", chain="article", wrt="w_kj")
    assert v.equivalent and v.report().startswith("EQUIVALENT")


HOSTILE = [
    "__import__('os').system('touch derive_pwned')",
    "exec('import os')",
    "().__class__.__bases__[0].__subclasses__()",
    "lambda: 0",
    r"\frac{1}{2",
    "y_j(1-y_j",
    r"\sum_{k \delta_k",
    "}",
    "x" * 100_000,
    r"\frac{1}{" * 60 + "x_i" + "}" * 60,
    "(" * 1000 + "x" + ")" * 1000,
    r"\foo_k x_i",
    "q_k",
    "",
    "   ",
    r"x_i^{1000}",
    r"\sum_a\sum_b\sum_c\sum_d\sum_e\sum_f\sum_g\sum_h\sum_m x_i",
    "99999999999999999999 x_i",
    "x_i \x00",
    r"\frac{\partial y_i}{\partial x_i}",
    r"x_{ij}",
    "x[i]]",
    "x_i +",
    r"\left( x_i",
    "+".join(["x_i"] * 400),
    "x_{" + "+".join(["i"] * 400) + "}",
    "-" * 1500 + "x_i",
    r"\hat{" * 20 + "x_i" + "}" * 20,
    r"\sigma^{2}_{i}",
    r"x_{i + \frac{1}{2}}",
    r"y^{(3)}_i",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_is_refused_cleanly_and_fast(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    verify("g_i", op="sigmoid", wrt="x")  # the op's derivation is built and cached: time the refusal only
    with pytest.raises(ValueError) as error:
        verify(text, op="sigmoid", wrt="x")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "derive_pwned").exists()


def test_malformed_input_points_at_the_position():
    with pytest.raises(FormulaError) as error:
        verify(r"y_j(1-y_j)\sum_k \delta_k w_{kj}}", chain=A, wrt="delta_j")
    assert error.value.column == 33
    with pytest.raises(FormulaError, match="column 7"):
        verify(r"y_j + + y_j", chain=A, wrt="delta_j")


def test_input_limits_are_checked_before_parsing():
    with pytest.raises(FormulaError, match="too long"):
        verify("x" * (MAX_CHARS + 1), op="sigmoid", wrt="x")
    with pytest.raises(FormulaError, match="nested too deeply"):
        verify(r"\frac{1}{" * 40 + "x_i" + "}" * 40, op="sigmoid", wrt="x")


def test_modest_nesting_still_gets_a_verdict():
    text = r"\frac{g_i y_i (1 - y_i)}{\frac{1}{\frac{1}{\frac{1}{\frac{1}{1}}}}}"
    assert verify(text, op="sigmoid", wrt="x").equivalent


def test_the_left_hand_side_must_agree_with_wrt():
    with pytest.raises(ValueError, match="names"):
        verify(r"\frac{\partial E}{\partial x_{nj}} = \sum_n \delta_{nk} x_{nj}", op="linear", wrt="W")
    with pytest.raises(ValueError, match="later layer"):
        verify(r"\frac{\partial E}{\partial w_{jk}} = \delta_k y_j", chain=A)
    with pytest.raises(ValueError, match="wrt"):
        verify(r"\delta_k y_j", chain=A)


def test_every_name_an_op_prints_reads_back_as_its_element(op):
    """Each tensor, intermediate and constant, written as the derivation prints it (``\\hat{x}_{ncs}``,
    ``\\sigma^{2}_{c}``, ``\\bar{\\sigma}^{2}_{c}``, ``\\epsilon``), is that element: the names come from the printer."""
    from derive.verifier.quantities import op_world
    table = op_world(op).table
    checked = 0
    for entry in table.entries:
        if entry.kind in ("size", "objective"):
            continue
        text = entry.tex()
        expected = entry.element([sp.Symbol(c, integer=True) for c in entry.letters])
        assert read(text, op=op.name) == expected, (text, entry.names)
        if table.vector_letters and entry.rank:  # the vector form's whole name, as --symbols lists it
            from derive.verifier.reading import _array_name
            g = next(e for e in table.entries if e.kind == "upstream")
            upstream = g.element([sp.Symbol(c, integer=True) for c in g.letters])
            whole = read(rf"{_array_name(entry, False, table)} \odot \vec{{g}}", op=op.name)
            assert whole == expected * upstream, entry.names
        checked += 1
    assert checked >= len(op.inputs)


def test_names_as_people_write_them():
    """The variance as sigma squared either way round, not the sigmoid; accents with or without the arrow;
    \\mathrm with an escaped underscore; \\varepsilon; the chain's tag for a second y."""
    var = read(r"\sigma^{2}_{c}", op="batch_norm")
    assert str(var) == "var[c]" and var == read(r"\sigma_c^2", op="batch_norm") == read(r"\sigma^2_c", op="batch_norm")
    assert read(r"\sigma(x_i)", op="sigmoid") == Sigmoid(read("x_i", op="sigmoid"))  # the function the engine names
    running = read(r"\mathrm{running\_var}_{c}", op="batch_norm_eval")
    assert str(running) == "running_var[c]" and running == read(r"\bar{\sigma}^{2}_{c}", op="batch_norm_eval")
    assert read("running_var[c]", op="batch_norm_eval") == running
    assert read(r"\varepsilon", op="batch_norm") == read(r"\epsilon", op="batch_norm") == read("eps", op="batch_norm")
    xhat = read(r"\hat{x}_{ncs}", op="batch_norm")
    assert str(xhat) == "xhat[n, c, s]" and xhat == read("xhat[n,c,s]", op="batch_norm")
    assert read(r"\hat{\vec{x}}^{T} \vec{g}", op="batch_norm") == read(r"\vec{\hat{x}}^T \vec{g}", op="batch_norm")
    assert str(read(r"\tilde{x}_{ncs} \rho_c \mu_c", op="batch_norm")) == "mu[c]*rstd[c]*xc[n, c, s]"
    chain = ("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy")
    assert str(read(r"y^{(3)}_{nj} - y_{nj}", chain=chain)) == "-y_1[n, j] + y_2[n, j]"
    assert str(read(r"\hat{x}_{nj}", chain=chain)) == "xhat_2[n, j]"
    with pytest.raises(FormulaError, match=r"unknown symbol \\sigma\^\{2\}"):  # no batch variance at inference
        read(r"\sigma^2_c", op="batch_norm_eval")
    with pytest.raises(FormulaError, match=r"unknown symbol y\^\{\(3\)\}"):
        read(r"y^{(3)}_{ncs}", op="batch_norm")


def test_vector_form_reads_inner_products_and_ones():
    """Batch norm's vector form runs along n and s for one channel c: g^T xhat sums over both."""
    inner = read(r"\vec{g}^{T} \hat{\vec{x}}", op="batch_norm")
    assert sp.simplify(inner - read(r"\sum_n \sum_s g_{ncs} \hat{x}_{ncs}", op="batch_norm")) == 0
    assert read(r"\mathbf{1}^{T} \vec{g}", op="batch_norm") == read(r"\sum_n \sum_s g_{ncs}", op="batch_norm")
    assert read(r"\gamma \vec{g}", op="batch_norm") == read(r"\gamma_c g_{ncs}", op="batch_norm")
    with pytest.raises(FormulaError, match="two vectors side by side"):
        read(r"\vec{g} \hat{\vec{x}}", op="batch_norm")
    with pytest.raises(FormulaError, match="row vector and a column"):
        read(r"\vec{g}^T + \hat{\vec{x}}", op="batch_norm")


def test_affine_indices_and_range_conditions_read_as_index_arithmetic():
    """What a strided or padded layer prints (``x_{n, c, i s + p}``, ``[0 \\le a + P - i s \\le K - 1]``) reads
    generically: index letters, sizes and numbers, added and multiplied; chained comparisons."""
    from derive.define.symbols import Iverson
    s = sp.Symbol("s", integer=True)
    N, S = sp.Symbol("N", integer=True, positive=True), sp.Symbol("S", integer=True, positive=True)
    flipped = read(r"g_{ncs} x_{n, c, S - 1 - s}", op="batch_norm")
    assert str(flipped) == "g[n, c, s]*x[n, c, S - s - 1]"
    assert read("g[n,c,s]*x[n, c, S - 1 - s]", op="batch_norm") == flipped
    assert str(read(r"x_{n, c, 2 s + 1} g_{ncs}", op="batch_norm")) == "g[n, c, s]*x[n, c, 2*s + 1]"
    bracket = read(r"g_{ncs} [0 \le N s + 1 - S \le S - 1]", op="batch_norm")
    condition = sp.And(sp.Le(0, N * s + 1 - S), sp.Le(N * s + 1 - S, S - 1))
    assert bracket == read("g[n,c,s]*(0 <= N*s + 1 - S <= S - 1)", op="batch_norm")
    assert bracket.has(Iverson) and [i.args[0] for i in bracket.atoms(Iverson)] == [condition]
    assert verify(r"\sum_n \sum_{s=0}^{S-1} g_{n, c, S - 1 - s}", op="batch_norm", wrt="beta").equivalent
    assert verify(r"\sum_n \sum_s g_{ncs} [0 \le s \le S - 1]", op="batch_norm", wrt="beta").equivalent
    assert not verify(r"\sum_n \sum_s g_{ncs} [1 \le s \le S - 1]", op="batch_norm", wrt="beta").equivalent


def test_w_kj_and_w_jk_are_different_elements():
    kj = read("w_{kj}", op="linear")
    jk = read("w_{jk}", op="linear")
    assert kj != jk and kj.indices == (sp.Symbol("k", integer=True), sp.Symbol("j", integer=True))


def test_symbols_lists_names_ranges_and_quantities():
    text = symbols("linear")
    for word in ("x_{nj}", "w_{kj}", "b_{k}", r"\delta_{nk}", "N", "D", "M", "k < M", "j < D"):
        assert word in text
    text = symbols(chain=A)
    for word in (r"\delta_{j}", r"\delta_{k}", "w_{ji}", "w_{kj}", "delta_j", "w_kj", "hidden layer"):
        assert word in text


# -- the command line ---------------------------------------------------------------------

def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "derive", "verify", *args], cwd=ROOT, capture_output=True,
                          text=True, input=stdin)


def test_cli_right_wrong_and_malformed():
    right = run("article", "--wrt", "delta_j", r"y_j(1-y_j)\sum_k \delta_k w_{kj}")
    assert right.returncode == 0 and right.stdout.startswith("EQUIVALENT")
    wrong = run("article", "--wrt", "delta_j", r"y_j(1-y_j)\sum_k \delta_k w_{jk}")
    assert wrong.returncode == 1 and "counterexample" in wrong.stdout and "transposed index" in wrong.stdout
    minus = run("linear", "--wrt", "W", r"-\sum_n \delta_{nk} x_{nj}")
    assert minus.returncode == 1 and "sign flipped" in minus.stdout
    chain = run("--chain", "linear,sigmoid,linear,sigmoid,half_sse", r"\frac{\partial E}{\partial w_{ji}} = \delta_j x_i")
    assert chain.returncode == 0, chain.stderr
    listing = run("linear", "--symbols")
    assert listing.returncode == 0 and "w_{kj}" in listing.stdout


@pytest.mark.parametrize("args, stdin", [
    (["linear", "--wrt", "W", "__import__('os').system('touch derive_pwned')"], None),
    (["linear", "--wrt", "W", r"\frac{1}{2}}"], None),
    (["linear", "--wrt", "W", "-"], "x" * 100_000),
    (["linear", "--wrt", "W", "-"], r"\frac{1}{" * 200 + "x" + "}" * 200),
    (["linear", "--wrt", "V", r"\delta_k x_j"], None),
    (["nope", "--wrt", "W", "x"], None),
    (["linear"], None),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, stdin, tmp_path):
    result = subprocess.run([sys.executable, "-m", "derive", "verify", *args], cwd=tmp_path, capture_output=True,
                            text=True, input=stdin, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "derive_pwned").exists()


# -- every emitted equation, read back -------------------------------------------------------

def _rows(tex: str) -> list[str]:
    """The parts of an emitted equation after its left-hand side: each ``=`` (or ``&=``) outside brackets."""
    from codegen.latex.breaking import unbroken
    tex = unbroken(tex)  # a long row broken across lines, read as the one row it is
    if "\\begin{aligned}" in tex:
        tex = tex.split("\\begin{aligned}\n")[1].split("\n\\end{aligned}")[0].replace(" \\\\\n", " ")
    tex = tex.replace("&=", "=")
    parts, depth, start = [], 0, 0
    for at, char in enumerate(tex):
        depth += char in "{([" and tex[at - 1] != "\\"
        depth -= char in "})]" and tex[at - 1] != "\\"
        if char == "=" and depth == 0:
            parts.append(tex[start:at].strip())
            start = at + 1
    parts.append(tex[start:].strip())
    return parts[1:]


def _same(a, b) -> bool:
    from derive.engine.chain import ChainProduct
    from derive.engine.check import is_zero
    from derive.engine.rewrite import canonical_bound, normalize
    from derive.define.symbols import Iverson
    a, b = (e.replace(lambda f: isinstance(f, ChainProduct), lambda f: sp.Mul(*f.args)) for e in (a, b))
    # [v = idx_n] reads as a bracket; the derivation's delta of an index and a token id is the same function
    a, b = (e.replace(lambda f: isinstance(f, Iverson) and isinstance(f.args[0], sp.Eq),
                      lambda f: sp.KroneckerDelta(*f.args[0].args)) for e in (a, b))
    return sp.expand(canonical_bound(normalize(a)) - canonical_bound(normalize(b))) == 0 or is_zero(a - b)


@pytest.mark.parametrize("form", ["index", "matrix"])
def test_every_gradient_row_an_op_prints_reads_back_as_its_sympy_expression(op, derivation, form):
    """Each row of each gradient (chain rule, deltas, folded, final), parsed by the verifier's grammar."""
    from codegen.latex.blocks import adjoint_blocks, adjoint_matrix_blocks, full_convolution_blocks, op_blocks
    explained = {b.equation for b in full_convolution_blocks(derivation, "en") if b.equation}  # own notation
    # (the pass through the intermediates names their gradients, which the verifier does not read yet)
    explained |= {b.equation for b in adjoint_blocks(derivation, "en") + adjoint_matrix_blocks(derivation, "en")
                  if b.equation}
    equations = [b.equation for b in op_blocks(derivation, "en", form)
                 if b.equation and isinstance(b.equation.lhs, sp.Derivative) and b.equation not in explained
                 and not b.equation.whole_array]  # pad, crop, ⋆: checked by codegen.latex.arrays instead
    assert equations or form == "matrix" or not derivation.written_out  # else through the intermediates only
    from codegen.latex.blocks import notation
    renamed = notation(op).indices  # an index letter a tensor also uses prints as another (conv2d's w as v)
    for eq in equations:
        wrt = eq.lhs.variables[0].base.name
        rows = _rows(eq.tex)
        assert len(rows) == len(eq.rhs)
        for text, expr in zip(rows, eq.rhs):
            for old, new in renamed.items():  # the op's own letter, which the verifier reads
                text = re.sub(r"\\[A-Za-z]+|.", lambda m: old if m.group() == new else m.group(), text)
            assert _same(read(text, op=op.name, wrt=wrt, derivatives=True), expr), (text, expr)


CHAINS = [("linear", "sigmoid", "linear", "sigmoid", "half_sse"),
          ("linear", "tanh", "linear", "softmax_cross_entropy"),
          ("linear", "relu", "linear", "leaky_relu", "linear", "mse"),
          ("linear", "softmax", "cross_entropy"),
          ("linear", "batch_norm", "relu", "linear", "softmax_cross_entropy")]


@pytest.mark.parametrize("sample", [True, False], ids=["one-sample", "batch"])
@pytest.mark.parametrize("names", CHAINS, ids=["article", "tanh-sce", "relu-mse", "softmax-ce", "bn-relu-sce"])
def test_every_row_a_chain_prints_reads_back_as_its_sympy_expression(names, sample):
    """Forward, error terms, gradients and updates of the chain, as the article writes them (one sample)
    and with the batch index; ``\\delta_k = \\frac{\\partial E}{\\partial net_k} = ...`` names its definition first."""
    from codegen.latex.chain import chain_blocks
    from derive.engine.chain import chain
    c = chain(names)
    checked = 0
    for block in chain_blocks(c, "en", sample=sample):
        eq = block.equation
        if eq is None:
            continue
        rows = _rows(eq.tex)
        if len(rows) == len(eq.rhs) + 1:  # an error term: its definition, then the rows
            assert isinstance(read(rows.pop(0), chain=names, derivatives=True), sp.Derivative), eq.tex
        assert len(rows) == len(eq.rhs), eq.tex
        for text, expr in zip(rows, eq.rhs):
            assert _same(read(text, chain=names, derivatives=True), expr), (text, expr)
            checked += 1
    assert checked >= 10


def test_an_unknown_wrt_names_the_option_and_the_quantities():
    with pytest.raises(ValueError, match=r"^wrt: unknown symbol Z; the quantities are x_nj, W \(w_kj\), b_k$"):
        verify(r"\sum_n \delta_{nk}", op="linear", wrt="Z")


def test_a_value_not_computed_in_time_gives_no_ratio_hint_and_no_crash():
    """On a loaded machine a value may take longer than its time limit (an ``_Unknown``): the hints that
    compare numbers skip it (CI once failed here with a TypeError from abs())."""
    from types import SimpleNamespace

    from derive.verifier.verification import _ratio_hints, _Unknown
    slow = _Unknown("takes over 2 s to evaluate", slow=True)
    study = SimpleNamespace(runs=[({}, [None, None], [{}], [[slow, 1.5]], [[2.0, slow]])], sample=False)
    assert _ratio_hints(None, None, study) == []
